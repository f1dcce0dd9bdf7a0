//! The backend's side of messages, call history, the account, status and
//! blocking: each command becomes one `babel-client` request, its answer an
//! [`Update::Social`] in the window's own types.

use babel_client::ClientError;
use babel_proto::ReplyError;

use super::{Backend, describe};
use crate::msg::{Command, Update};
use crate::social::SocialUpdate;

impl Backend {
    /// Handles the commands of [`crate::social`].
    pub(super) async fn social(&mut self, c: Command) {
        match c {
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
