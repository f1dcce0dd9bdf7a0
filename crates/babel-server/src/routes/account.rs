//! Account and privacy routes (DESIGN.md §5): `/rename`, `/change_password`,
//! `/sessions`, `/end_session`, `/set_status`, `/block`, `/unblock`,
//! `/blocked`; and how a session ends with `/session_ended`.
//!
//! Blocking, in short (SECURITY.md has the whole promise): whatever linked
//! the two goes, calls they share lose the blocker, and from then on the
//! blocked user is treated as a stranger who cannot tell they are blocked:
//! their `/add_contact` is answered and listed as pending like any other,
//! but never reaches the blocker; `/invite` refuses to put the two in one
//! call.

use std::net::IpAddr;

use babel_proto::{
    AccountRequest, CallId, ChosenStatus, ContactEntry, ContactRef, EndReason, Presence, Reply, ServerEvent,
    SessionEndReason, SessionEnded, SessionEntry, UserId,
};

use crate::app::{App, Authed, ConnState, ServiceError, ServiceResult, now};
use crate::auth;
use crate::identity;
use crate::routes::accounts::{MAX_PASSWORD, MIN_PASSWORD};
use crate::store::{Relation, RemoveOutcome, SessionId, SessionRecord};

impl App {
    /// Answers an authenticated account request.
    pub(crate) async fn account(
        &self,
        conn: &mut ConnState,
        me: Authed,
        request: AccountRequest,
    ) -> ServiceResult<Reply> {
        match request {
            AccountRequest::Rename { name } => self.rename(me, name).await,
            AccountRequest::ChangePassword { password, new_password } => {
                self.check_password(conn, me.user, password).await?;
                self.change_password(me, new_password).await
            }
            AccountRequest::Sessions => self.list_sessions(me).await,
            AccountRequest::EndSession { session_id } => {
                let user = me.user;
                let rec = self
                    .blocking(move |s| s.user_sessions(user))
                    .await?
                    .into_iter()
                    .find(|r| r.id.0 == session_id.0)
                    .ok_or_else(|| ServiceError::Refused("you have no session with this id".into()))?;
                self.end_session_because(rec, SessionEndReason::Ended).await?;
                self.forget_session(conn, rec.id);
                Ok(Reply::Ok)
            }
            AccountRequest::SetStatus { status } => self.set_status(me, status).await,
            AccountRequest::Block { target } => {
                let other = match target {
                    ContactRef::Id(id) => self.user(id).await?.id,
                    ContactRef::Email(email) => {
                        self.limiter.check_lookup(conn.ip(), me.user.0).map_err(ServiceError::Refused)?;
                        self.user_by_email(&email).await?.id
                    }
                };
                self.block(me.user, other).await
            }
            AccountRequest::Unblock { contact_id } => {
                let user = me.user;
                if !self.blocking(move |s| s.unblock(user, contact_id)).await? {
                    return Err(ServiceError::Refused("you have not blocked this user".into()));
                }
                Ok(Reply::Ok)
            }
            AccountRequest::Blocked => {
                let user = me.user;
                Ok(Reply::Users(self.blocking(move |s| s.blocked(user)).await?))
            }
        }
    }

    /// Ends a session and tells its event streams why first (`/session_ended`
    /// is the last event they get); its calls end with reason `logout`.
    pub(crate) async fn end_session_because(&self, rec: SessionRecord, reason: SessionEndReason) -> ServiceResult<()> {
        let ended = SessionEnded { session_id: babel_proto::SessionId(rec.id.0), reason };
        self.hub.to_session(rec.user, rec.id, &ServerEvent::SessionEnded(ended));
        self.presence.close_session(rec.user, rec.id);
        self.end_session(rec, EndReason::Logout).await
    }

    /// Loads the status a user chose, once, before their first connection
    /// counts them online (so nobody sees them `online` for a moment when
    /// they chose `invisible`).
    pub(crate) async fn load_chosen_status(&self, user: UserId) {
        if self.statuses.knows(user) {
            return;
        }
        match self.blocking(move |s| s.chosen_status(user)).await {
            Ok(status) => self.statuses.fill(user, status),
            Err(e) => tracing::warn!(error = %e, "cannot read a chosen status; showing available"),
        }
    }

    /// Records the address a new session came from (for `/sessions`).
    pub(crate) async fn record_session_address(&self, id: SessionId, ip: IpAddr) {
        let address = ip.to_string();
        if let Err(e) = self.blocking(move |s| s.set_session_address(id, &address)).await {
            tracing::warn!(error = %e, "cannot record a session's address");
        }
    }

    async fn rename(&self, me: Authed, name: String) -> ServiceResult<Reply> {
        if name.trim().is_empty() {
            return Err(ServiceError::Refused("the name cannot be empty".into()));
        }
        let current = self.user(me.user).await?;
        let name = identity::display_name(Some(&name), &current.email)?;
        let (user, n) = (me.user, name.clone());
        if !self.blocking(move |s| s.rename(user, &n)).await? {
            return Err(ServiceError::Unauthorized);
        }
        self.user_changed(me.user);
        let renamed = babel_proto::User { name, ..current };
        let event =
            ServerEvent::ContactUpdated(ContactEntry { user: renamed.clone(), status: self.status_of(me.user) });
        for (contact, rel) in self.cached_contacts(me.user).await?.iter() {
            if *rel == Relation::Contact {
                self.hub.to_user(contact.id, &event);
            }
        }
        Ok(Reply::User(renamed))
    }

    async fn change_password(&self, me: Authed, new_password: babel_proto::Secret) -> ServiceResult<Reply> {
        let len = new_password.expose().chars().count();
        if len < MIN_PASSWORD {
            return Err(ServiceError::Refused(format!("the password must be at least {MIN_PASSWORD} characters")));
        }
        if len > MAX_PASSWORD {
            return Err(ServiceError::Refused(format!("the password must be at most {MAX_PASSWORD} characters")));
        }
        let cost = self.cfg.password_cost;
        let hash = self
            .cpu(move || auth::hash_password(new_password.expose(), cost))
            .await?
            .map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        let (user, keep) = (me.user, me.session);
        let ended = self.blocking(move |s| s.set_password(user, &hash, keep)).await?;
        for rec in ended {
            self.end_session_because(rec, SessionEndReason::PasswordChanged).await?;
        }
        tracing::info!(user = %me.user, "password changed; other sessions ended");
        Ok(Reply::Ok)
    }

    async fn list_sessions(&self, me: Authed) -> ServiceResult<Reply> {
        let user = me.user;
        let list = self.blocking(move |s| s.session_details(user)).await?;
        let entries = list
            .into_iter()
            .map(|d| SessionEntry {
                session_id: babel_proto::SessionId(d.id.0),
                created_at: babel_proto::account::rfc3339(d.created_at),
                last_used: babel_proto::account::rfc3339(d.last_used),
                address: d.address,
                current: d.id == me.session,
            })
            .collect();
        Ok(Reply::Sessions(entries))
    }

    async fn set_status(&self, me: Authed, status: ChosenStatus) -> ServiceResult<Reply> {
        let user = me.user;
        self.blocking(move |s| s.set_chosen_status(user, status)).await?;
        let before = self.status_of(user);
        self.statuses.set(user, status);
        let after = self.status_of(user);
        self.refresh_status(user).await;
        // Going invisible must look exactly like going offline (and coming
        // back like coming online), which `/status` alone tells.
        if before != after && before != Presence::Offline && after != Presence::Offline {
            let event = ServerEvent::ContactUpdated(ContactEntry { user: self.user(user).await?, status: after });
            for (contact, rel) in self.cached_contacts(user).await?.iter() {
                if *rel == Relation::Contact {
                    self.hub.to_user(contact.id, &event);
                }
            }
        }
        Ok(Reply::Ok)
    }

    async fn block(&self, me: UserId, other: UserId) -> ServiceResult<Reply> {
        if other == me {
            return Err(ServiceError::Refused("you cannot block yourself".into()));
        }
        let outcome = self.blocking(move |s| s.block(me, other, now())).await?;
        if let Some(outcome) = outcome {
            self.contacts_changed(&[me, other]);
            // Told as a plain removal would be: nothing says "blocked".
            if outcome != RemoveOutcome::NotFound {
                self.hub.to_user(me, &ServerEvent::ContactRemoved(other));
            }
            if !matches!(outcome, RemoveOutcome::NotFound | RemoveOutcome::CancelledWithheld) {
                self.hub.to_user(other, &ServerEvent::ContactRemoved(me));
            }
        }
        // The blocker leaves every call the two share (a two-party one ends).
        for (call, legs) in self.calls.shared(me, other) {
            for leg in legs {
                if let Ok(fx) = self.calls.leave(call, leg, EndReason::Hangup) {
                    self.apply(fx).await;
                }
            }
        }
        tracing::debug!(user = %me, "blocked someone");
        Ok(Reply::Ok)
    }

    /// Refuses to ring `invitee` into a call with someone who blocks them or
    /// whom they block.
    pub(crate) async fn refuse_blocked_in_call(&self, call: CallId, invitee: &babel_proto::User) -> ServiceResult<()> {
        let id = invitee.id;
        let links = self.blocking(move |s| s.block_links(id)).await?;
        if links.is_empty() {
            return Ok(());
        }
        if self.calls.users_in(call).iter().any(|u| links.contains(u)) {
            return Err(ServiceError::Refused(format!("{} cannot be invited to this call", invitee.name)));
        }
        Ok(())
    }
}
