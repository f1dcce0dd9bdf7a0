//! Account and privacy controls (DESIGN.md §5): name, password, sessions,
//! chosen status, blocking. Their events (`/contact_updated`,
//! `/session_ended`) arrive on the [`crate::EventStream`] as
//! [`babel_proto::ServerEvent::ContactUpdated`] and
//! [`babel_proto::ServerEvent::SessionEnded`].

use babel_proto::{
    AccountRequest, ChosenStatus, ClientRequest, ContactRef, Secret, SessionEntry, SessionId, User, UserId,
};

use crate::{Client, Result};

impl Client {
    async fn account(&mut self, request: AccountRequest) -> Result<babel_proto::Answer> {
        let req = ClientRequest::Account { auth: self.creds()?, request };
        self.request(&req).await
    }

    /// Changes my display name; answers my user as others now see it.
    pub async fn rename(&mut self, name: &str) -> Result<User> {
        let user: User = self.account(AccountRequest::Rename { name: name.to_owned() }).await?.json()?;
        if let Some(s) = self.session.as_mut() {
            s.name.clone_from(&user.name);
        }
        Ok(user)
    }

    /// Changes my password. Every other session of mine ends; this one
    /// goes on. A wrong `current` password is a refusal (403), not 401.
    pub async fn change_password(&mut self, current: &str, new: &str) -> Result<()> {
        let request = AccountRequest::ChangePassword { password: Secret::new(current), new_password: Secret::new(new) };
        Ok(self.account(request).await?.ok()?)
    }

    /// My sessions (devices), the one asking marked `current`.
    pub async fn sessions(&mut self) -> Result<Vec<SessionEntry>> {
        Ok(self.account(AccountRequest::Sessions).await?.json()?)
    }

    /// Ends one of my sessions (its connections close).
    pub async fn end_session(&mut self, session_id: SessionId) -> Result<()> {
        Ok(self.account(AccountRequest::EndSession { session_id }).await?.ok()?)
    }

    /// Chooses my status; it stays chosen across sessions and restarts.
    pub async fn set_status(&mut self, status: ChosenStatus) -> Result<()> {
        Ok(self.account(AccountRequest::SetStatus { status }).await?.ok()?)
    }

    /// Blocks someone: contact and requests go both ways, a shared call
    /// ends, and they learn nothing more about me.
    pub async fn block(&mut self, target: ContactRef) -> Result<()> {
        Ok(self.account(AccountRequest::Block { target }).await?.ok()?)
    }

    /// Unblocks someone (they do not become a contact again by it).
    pub async fn unblock(&mut self, contact: UserId) -> Result<()> {
        Ok(self.account(AccountRequest::Unblock { contact_id: contact }).await?.ok()?)
    }

    /// The users I block.
    pub async fn blocked(&mut self) -> Result<Vec<User>> {
        Ok(self.account(AccountRequest::Blocked).await?.json()?)
    }
}
