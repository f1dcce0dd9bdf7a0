//! The backend's side of messages, call history, the account, status and
//! blocking: each command becomes one `babel-client` request, its answer an
//! [`Update::Social`] in the window's own types.

use babel_client::ClientError;
use babel_proto::{ContactRef, EntryId, MessageId, Page, ReplyError, SessionId};

use super::{Backend, describe};
use crate::msg::{Command, Update};
use crate::social::{HISTORY_PAGE, PAGE, SessionRow, SocialUpdate};

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
            Command::Rename(name) => {
                let Some(client) = self.client.as_mut() else { return };
                match client.rename(&name).await {
                    Ok(user) => {
                        // The saved session keeps the new name for the next start.
                        if let (Some(session), Ok(Some(mut saved))) =
                            (client.session().cloned(), self.home.load_session())
                        {
                            saved.info = session;
                            let _ = self.home.save_session(&saved);
                        }
                        self.send(Update::Social(SocialUpdate::Renamed(user)));
                    }
                    Err(e) => self.account_failed(&e),
                }
            }
            Command::ChangePassword { password, new_password } => {
                let Some(client) = self.client.as_mut() else { return };
                match client.change_password(&password, &new_password).await {
                    Ok(()) => self.send(Update::Social(SocialUpdate::PasswordChanged)),
                    Err(e) => self.account_failed(&e),
                }
            }
            Command::LoadSessions => {
                let Some(client) = self.client.as_mut() else { return };
                match client.sessions().await {
                    Ok(list) => {
                        let rows = list
                            .into_iter()
                            .map(|s| SessionRow {
                                session_id: s.session_id.0,
                                created_at: s.created_at,
                                last_used: s.last_used,
                                address: s.address,
                                current: s.current,
                            })
                            .collect();
                        self.send(Update::Social(SocialUpdate::Sessions(rows)));
                    }
                    Err(e) => self.account_failed(&e),
                }
            }
            Command::EndSession(id) => {
                let Some(client) = self.client.as_mut() else { return };
                match client.end_session(SessionId(id)).await {
                    Ok(()) => Box::pin(self.social(Command::LoadSessions)).await,
                    Err(e) => self.account_failed(&e),
                }
            }
            Command::SetStatus(status) => {
                let Some(client) = self.client.as_mut() else { return };
                match client.set_status(status.into()).await {
                    Ok(()) => {
                        self.settings.status = status.as_str().to_owned();
                        if let Err(e) = self.home.save_settings(&self.settings) {
                            tracing::warn!(error = %e, "settings not saved");
                        }
                        self.send(Update::Social(SocialUpdate::StatusSet(status)));
                    }
                    Err(e) => self.request_failed(&e),
                }
            }
            Command::Block(id) => {
                let Some(client) = self.client.as_mut() else { return };
                match client.block(ContactRef::Id(id)).await {
                    Ok(()) => {
                        Box::pin(self.social(Command::LoadBlocked)).await;
                        self.refresh().await;
                    }
                    Err(e) => self.request_failed(&e),
                }
            }
            Command::Unblock(id) => {
                let Some(client) = self.client.as_mut() else { return };
                match client.unblock(id).await {
                    Ok(()) => Box::pin(self.social(Command::LoadBlocked)).await,
                    Err(e) => self.request_failed(&e),
                }
            }
            Command::LoadBlocked => {
                let Some(client) = self.client.as_mut() else { return };
                match client.blocked().await {
                    Ok(list) => self.send(Update::Social(SocialUpdate::Blocked(list))),
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

    /// This session was ended elsewhere: its call, connection and saved
    /// session go (the window says why).
    pub(super) async fn session_ended(&mut self) {
        self.reset().await;
        if let Err(e) = self.home.forget_session() {
            tracing::warn!(error = %e, "session not forgotten");
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
