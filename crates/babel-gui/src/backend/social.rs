//! The backend's side of messages, call history, the account, status and
//! blocking: each command becomes one `babel-client` request, its answer an
//! [`Update::Social`] in the window's own types.

use babel_client::ClientError;
use babel_proto::{EntryId, MessageId, Page, ReplyError};

use super::{Backend, describe};
use crate::msg::{Command, Update};
use crate::social::{HISTORY_PAGE, PAGE, SocialUpdate};

impl Backend {
    /// Handles the commands of [`crate::social`].
    pub(super) async fn social(&mut self, c: Command) {
        match c {
            Command::LoadMessages { contact, before } => {
                let Some(client) = self.client.as_mut() else { return };
                let page = before.map_or(Page::Latest, |b| Page::Before(MessageId(b)));
                match client.messages(Some(contact), page, PAGE).await {
                    Ok(list) => {
                        let messages = list.into_iter().map(Into::into).collect();
                        self.send(Update::Social(SocialUpdate::Messages { contact, before, messages }));
                    }
                    Err(e) if is_session_end(&e) => self.request_failed(&e),
                    Err(e) => {
                        let reason = describe(&e, &self.addr(), false);
                        self.send(Update::Social(SocialUpdate::MessagesFailed(contact, reason)));
                    }
                }
            }
            Command::SendMessage { contact, text, client_id } => {
                let Some(client) = self.client.as_mut() else { return };
                let me = client.user_id().unwrap_or(contact);
                match client.send_message(contact, &text, Some(&client_id)).await {
                    Ok(sent) => {
                        let message = crate::social::ChatMessage {
                            id: sent.message_id.0,
                            from: me,
                            to: contact,
                            text,
                            sent_at: sent.sent_at,
                            read: false,
                        };
                        self.send(Update::Social(SocialUpdate::Sent { contact, client_id, message }));
                    }
                    Err(e) if is_session_end(&e) => self.request_failed(&e),
                    Err(e) => {
                        let reason = describe(&e, &self.addr(), false);
                        self.send(Update::Social(SocialUpdate::SendFailed { contact, client_id, reason }));
                    }
                }
            }
            Command::MarkRead { contact, message_id } => {
                let Some(client) = self.client.as_mut() else { return };
                if let Err(e) = client.mark_read(contact, MessageId(message_id)).await {
                    // The next read marks it again; a note is enough.
                    tracing::debug!(error = %e, "read mark not sent");
                }
            }
            Command::LoadHistory { before } => {
                let Some(client) = self.client.as_mut() else { return };
                match client.call_history(before.map(EntryId), HISTORY_PAGE).await {
                    Ok(list) => {
                        let entries = list.into_iter().map(Into::into).collect();
                        self.send(Update::Social(SocialUpdate::History { before, entries }));
                    }
                    Err(e) => self.request_failed(&e),
                }
            }
            Command::NotifyMessage { from, text } => {
                tokio::spawn(crate::notify::message(from, text));
            }
            Command::DeleteAccount { password } => {
                let Some(client) = self.client.as_mut() else { return };
                match client.delete_account_with_password(&password).await {
                    Ok(()) => {
                        self.reset().await;
                        let _ = self.home.forget_session();
                        self.send(Update::Social(SocialUpdate::AccountDeleted));
                    }
                    Err(e) => self.account_failed(&e),
                }
            }
            other => {
                tracing::debug!(command = ?std::mem::discriminant(&other), "not handled yet");
            }
        }
    }

    /// Unread counts (after signing in, and after a reconnection).
    pub(super) async fn load_unread(&mut self) {
        let Some(client) = self.client.as_mut() else { return };
        match client.unread().await {
            Ok(list) => {
                let counts = list.into_iter().map(|u| (u.contact_id, u.count)).collect();
                self.send(Update::Social(SocialUpdate::Unread(counts)));
            }
            Err(e) => self.request_failed(&e),
        }
    }

    /// An account-page request failed: said on the page (a wrong password
    /// is a 403, never a 401 that would end the session).
    fn account_failed(&mut self, e: &ClientError) {
        match e {
            ClientError::Server(ReplyError::Unauthorized) => self.request_failed(e),
            _ => {
                let server = self.addr();
                self.send(Update::Social(SocialUpdate::AccountFailed(describe(e, &server, false))));
            }
        }
    }
}

/// A 401: this session is over (it is signed out, not told an error).
fn is_session_end(e: &ClientError) -> bool {
    matches!(e, ClientError::Server(ReplyError::Unauthorized))
}
