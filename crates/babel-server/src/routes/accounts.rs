//! `/create`, `/login`, `/logout`, `/delete`.

use babel_proto::{Credentials, EndReason, LogoutBy, Reply, Secret, ServerEvent, SessionInfo};

use crate::app::{App, ConnState, ServiceError, ServiceResult, now};
use crate::auth;
use crate::identity::{self, CanonicalEmail, IdentityError};
use crate::store::StoreError;

pub(crate) const MIN_PASSWORD: usize = 8;
pub(crate) const MAX_PASSWORD: usize = 1024;

impl From<IdentityError> for ServiceError {
    fn from(e: IdentityError) -> Self {
        ServiceError::Refused(e.to_string())
    }
}

/// Checks an email and answers its canonical form ([`identity`]).
pub fn normalize_email(raw: &str) -> ServiceResult<CanonicalEmail> {
    Ok(identity::canonical_email(raw)?)
}

impl App {
    pub(crate) async fn create(
        &self,
        conn: &mut ConnState,
        email: String,
        password: Secret,
        name: Option<String>,
    ) -> ServiceResult<Reply> {
        let CanonicalEmail { email, skeleton } = normalize_email(&email)?;
        let name = identity::display_name(name.as_deref(), &email)?;
        self.limiter.check_create(conn.ip()).map_err(ServiceError::Refused)?;
        let len = password.expose().chars().count();
        if len < MIN_PASSWORD {
            return Err(ServiceError::Refused(format!("the password must be at least {MIN_PASSWORD} characters")));
        }
        if len > MAX_PASSWORD {
            return Err(ServiceError::Refused(format!("the password must be at most {MAX_PASSWORD} characters")));
        }
        let cost = self.cfg.password_cost;
        let hash = self
            .cpu(move || auth::hash_password(password.expose(), cost))
            .await?
            .map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        let (e, n) = (email.clone(), name.clone());
        let user = match self.blocking(move |s| Ok(s.create_user(&e, &skeleton, &n, &hash, now()))).await? {
            Ok(user) => user,
            Err(StoreError::EmailTaken) => {
                return Err(ServiceError::Refused(format!("an account with the email {email} already exists")));
            }
            Err(StoreError::LookAlike) => {
                return Err(ServiceError::Refused(format!(
                    "{email} looks like the address of an existing account; choose another"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(user = %user.id, "account created");
        let token = self.open_session(conn, user.id).await?;
        Ok(Reply::Created(SessionInfo { id: user.id, name: user.name, email: user.email, token: Secret::new(token) }))
    }

    pub(crate) async fn login(&self, conn: &mut ConnState, email: String, password: Secret) -> ServiceResult<Reply> {
        // A malformed email can still name an account the canonical-address
        // migration left as it was, so it is looked up, not refused: an
        // unknown one gets the same answer as a wrong password.
        let exact = identity::legacy_form(&email);
        let canonical = identity::canonical_email(&email).ok().map(|c| c.email);
        let email = canonical.clone().unwrap_or_else(|| exact.clone());
        self.limiter.check_login(conn.ip(), &email).map_err(ServiceError::Refused)?;
        let account = self.blocking(move |s| s.account_for_login(&exact, canonical.as_deref())).await?;
        let (user, phc) = match account {
            Some(a) => (Some(a.user), a.password_hash),
            None => (None, self.dummy_hash().await?),
        };
        // Verify even for an unknown email, so timing does not tell which exist.
        let ok = self.cpu(move || auth::verify_password(password.expose(), &phc)).await?;
        let user = match (user, ok) {
            (Some(u), true) => u,
            _ => {
                self.limiter.login_result(conn.ip(), &email, false);
                return Err(ServiceError::Unauthorized);
            }
        };
        self.limiter.login_result(conn.ip(), &email, true);
        let token = self.open_session(conn, user.id).await?;
        tracing::debug!(user = %user.id, "logged in");
        Ok(Reply::Session(SessionInfo { id: user.id, name: user.name, email: user.email, token: Secret::new(token) }))
    }

    /// Checks the password of a logged-in user (a `/delete` that carries
    /// `pass`): 403 when it is wrong (the token was right, so never 401),
    /// limited like `/login` so a stolen token cannot guess it.
    pub(crate) async fn check_password(
        &self,
        conn: &ConnState,
        user: babel_proto::UserId,
        password: Secret,
    ) -> ServiceResult<()> {
        let email = self.blocking(move |s| s.user(user)).await?.ok_or(ServiceError::Unauthorized)?.email;
        self.limiter.check_login(conn.ip(), &email).map_err(ServiceError::Refused)?;
        let lookup = email.clone();
        let account = self.blocking(move |s| s.account_by_email(&lookup)).await?.ok_or(ServiceError::Unauthorized)?;
        let phc = account.password_hash;
        let ok = self.cpu(move || auth::verify_password(password.expose(), &phc)).await?;
        self.limiter.login_result(conn.ip(), &email, ok);
        if ok { Ok(()) } else { Err(ServiceError::Refused("wrong password".into())) }
    }

    /// A valid hash of a random password at the configured cost, made once,
    /// for logins to unknown emails.
    async fn dummy_hash(&self) -> ServiceResult<String> {
        if let Some(h) = self.dummy_hash.get() {
            return Ok(h.clone());
        }
        let cost = self.cfg.password_cost;
        let h = self
            .cpu(move || auth::hash_password("no account has this password", cost))
            .await?
            .map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        Ok(self.dummy_hash.get_or_init(|| h).clone())
    }

    pub(crate) async fn logout(&self, conn: &mut ConnState, by: LogoutBy) -> ServiceResult<Reply> {
        let rec = match by {
            LogoutBy::Email { email, token } => {
                let rec = self.session_for_token(token.expose()).await?;
                // The address names the account as /login reads it, so
                // every spelling that logs in (`ÉMILE@…`) also logs out.
                let exact = identity::legacy_form(&email);
                let canonical = identity::canonical_email(&email).ok().map(|c| c.email);
                let named = self.blocking(move |s| s.account_for_login(&exact, canonical.as_deref())).await?;
                if named.is_none_or(|a| a.user.id != rec.user) {
                    return Err(ServiceError::Unauthorized);
                }
                rec
            }
            LogoutBy::Header(Credentials { id, token }) => {
                let rec = self.session_for_token(token.expose()).await?;
                if rec.user != id {
                    return Err(ServiceError::Unauthorized);
                }
                rec
            }
        };
        self.end_session(rec, EndReason::Logout).await?;
        self.forget_session(conn, rec.id);
        tracing::debug!(user = %rec.user, "logged out");
        Ok(Reply::Ok)
    }

    pub(crate) async fn delete(
        &self,
        conn: &mut ConnState,
        creds: Credentials,
        password: Option<Secret>,
    ) -> ServiceResult<Reply> {
        let rec = self.session_for_token(creds.token.expose()).await?;
        if rec.user != creds.id {
            return Err(ServiceError::Unauthorized);
        }
        let user = rec.user;
        if let Some(password) = password {
            self.check_password(conn, user, password).await?;
        }
        let linked = self.blocking(move |s| s.delete_user(user)).await?.ok_or(ServiceError::Unauthorized)?;
        self.end_user(user).await;
        // The connection that asked stays open (anonymous), as after /logout.
        self.forget_session(conn, rec.id);
        let mut changed = linked.clone();
        changed.push(user);
        self.contacts_changed(&changed);
        for other in linked {
            self.hub.to_user(other, &ServerEvent::ContactRemoved(user));
        }
        tracing::info!(%user, "account deleted");
        Ok(Reply::Ok)
    }
}
