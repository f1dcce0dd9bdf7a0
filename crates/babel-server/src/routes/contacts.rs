//! `/contacts`, `/add_contact`, `/remove_contact`, `/accept_contact`,
//! `/decline_contact` (`/contact_requests` is a plain store read in the
//! dispatcher).

use babel_proto::{ContactEntry, ContactRef, Presence, Reply, ServerEvent, User, UserId};

use crate::app::{App, ServiceError, ServiceResult};
use crate::routes::accounts::normalize_email;
use crate::store::{AddOutcome, Relation, RemoveOutcome};

impl App {
    pub(crate) async fn contact_list(&self, me: UserId) -> ServiceResult<Reply> {
        let list = self.cached_contacts(me).await?;
        let mut online = self.presence.online_map(list.iter().map(|(u, _)| u.id));
        let mut busy = self.calls.busy_map(list.iter().map(|(u, _)| u.id));
        if self.bus.is_some() {
            for (i, (u, _)) in list.iter().enumerate() {
                online[i] = online[i] || self.online_anywhere(u.id);
                busy[i] = busy[i] || self.busy_anywhere(u.id);
            }
        }
        let chosen = self.statuses.get_many(list.iter().map(|(u, _)| u.id));
        let entries = list
            .iter()
            .zip(online.into_iter().zip(busy).zip(chosen))
            .map(|((user, rel), ((online, busy), chosen))| ContactEntry {
                user: user.clone(),
                status: match rel {
                    Relation::Outgoing => Presence::Pending,
                    Relation::Contact => crate::status::shown(online, busy, chosen),
                },
            })
            .collect();
        Ok(Reply::Contacts(entries))
    }

    pub(crate) async fn user_by_email(&self, raw: &str) -> ServiceResult<User> {
        let email = normalize_email(raw)?.email;
        let lookup = email.clone();
        self.blocking(move |s| s.account_by_email(&lookup))
            .await?
            .map(|a| a.user)
            .ok_or_else(|| ServiceError::Refused(format!("nobody has the email {email}")))
    }

    pub(crate) async fn add_contact(&self, me: UserId, email: String) -> ServiceResult<Reply> {
        let other = self.user_by_email(&email).await?;
        if other.id == me {
            return Err(ServiceError::Refused("you cannot add yourself as a contact".into()));
        }
        let to = other.id;
        let mine = self.cached_contacts(me).await?;
        let limits = &self.limiter.config();
        if mine.iter().filter(|(_, r)| *r == Relation::Contact).count() >= limits.max_contacts {
            return Err(ServiceError::Refused(format!(
                "you have reached the limit of {} contacts",
                limits.max_contacts
            )));
        }
        if mine.iter().filter(|(_, r)| *r == Relation::Outgoing).count() >= limits.max_pending_requests {
            return Err(ServiceError::Refused(format!(
                "you have {} requests waiting for answers; wait for some, or cancel them",
                limits.max_pending_requests
            )));
        }
        let outcome = self.blocking(move |s| s.add_request(me, to, crate::app::now())).await?;
        match outcome {
            AddOutcome::Requested => {
                self.contacts_changed(&[me, to]);
                let me_user = self.user(me).await?;
                self.hub.to_user(to, &ServerEvent::ContactRequest(me_user));
                // My other devices list the request as pending.
                self.hub
                    .to_user(me, &ServerEvent::ContactAdded(ContactEntry { user: other, status: Presence::Pending }));
                Ok(Reply::Ok)
            }
            AddOutcome::BecameContacts => {
                self.contacts_changed(&[me, to]);
                self.announce_contacts(me, to).await?;
                Ok(Reply::Ok)
            }
            AddOutcome::Withheld => {
                // They block me: answered and shown like any request (my
                // devices list it pending), but they are never told.
                self.contacts_changed(&[me]);
                self.hub
                    .to_user(me, &ServerEvent::ContactAdded(ContactEntry { user: other, status: Presence::Pending }));
                Ok(Reply::Ok)
            }
            AddOutcome::YouBlock => {
                Err(ServiceError::Refused(format!("you blocked {}; unblock them first", other.email)))
            }
            AddOutcome::AlreadyContacts => {
                Err(ServiceError::Refused(format!("{} is already in your contacts", other.email)))
            }
            AddOutcome::AlreadyRequested => Err(ServiceError::Refused(format!(
                "you already asked {}; the request is waiting for their answer",
                other.email
            ))),
        }
    }

    pub(crate) async fn remove_contact(&self, me: UserId, target: ContactRef) -> ServiceResult<Reply> {
        let other = match target {
            ContactRef::Id(id) => id,
            ContactRef::Email(email) => self.user_by_email(&email).await?.id,
        };
        let outcome = self.blocking(move |s| s.remove_link(me, other)).await?;
        if outcome == RemoveOutcome::NotFound {
            return Err(ServiceError::Refused("this user is not in your contacts".into()));
        }
        self.contacts_changed(&[me, other]);
        self.hub.to_user(me, &ServerEvent::ContactRemoved(other));
        // They never saw a withheld request (they block me): nothing to tell.
        if outcome != RemoveOutcome::CancelledWithheld {
            self.hub.to_user(other, &ServerEvent::ContactRemoved(me));
        }
        Ok(Reply::Ok)
    }

    pub(crate) async fn answer_request(&self, me: UserId, from: UserId, accept: bool) -> ServiceResult<Reply> {
        let done = if accept {
            self.blocking(move |s| s.accept_request(me, from)).await?
        } else {
            self.blocking(move |s| s.decline_request(me, from)).await?
        };
        if !done {
            return Err(ServiceError::Refused("there is no contact request from this user".into()));
        }
        self.contacts_changed(&[me, from]);
        if accept {
            self.announce_contacts(me, from).await?;
        } else {
            self.hub.to_user(me, &ServerEvent::ContactRemoved(from));
            self.hub.to_user(from, &ServerEvent::ContactRemoved(me));
        }
        Ok(Reply::Ok)
    }

    pub(crate) async fn user(&self, id: UserId) -> ServiceResult<User> {
        self.blocking(move |s| s.user(id)).await?.ok_or_else(|| ServiceError::Refused("no such user".into()))
    }

    /// Tells both sides of a new contact about each other, with presence.
    async fn announce_contacts(&self, a: UserId, b: UserId) -> ServiceResult<()> {
        let (ua, ub) = (self.user(a).await?, self.user(b).await?);
        self.hub.to_user(a, &ServerEvent::ContactAdded(ContactEntry { user: ub, status: self.status_of(b) }));
        self.hub.to_user(b, &ServerEvent::ContactAdded(ContactEntry { user: ua, status: self.status_of(a) }));
        Ok(())
    }
}
