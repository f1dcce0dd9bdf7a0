//! `/create`, `/login`, `/logout`, `/delete`.

use babel_proto::{Credentials, EndReason, LogoutBy, Reply, Secret, ServerEvent, SessionInfo};

use crate::app::{App, ConnState, ServiceError, ServiceResult, now};
use crate::auth;
use crate::store::StoreError;

const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 1024;
const MAX_NAME: usize = 64;

/// Checks an email's shape and returns it trimmed and lowercase. This is a
/// sanity check (one `@`, a dotted domain, no spaces), not RFC 5322.
pub fn normalize_email(raw: &str) -> ServiceResult<String> {
    let email = raw.trim().to_lowercase();
    let refuse = || ServiceError::Refused(format!("`{}` is not a valid email address", raw.trim()));
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refuse());
    }
    let (local, domain) = email.split_once('@').ok_or_else(refuse)?;
    let domain_ok = !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'))
        && domain.chars().all(|c| c.is_alphanumeric() || c == '.' || c == '-');
    if local.is_empty() || local.len() > 64 || !domain_ok {
        return Err(refuse());
    }
    Ok(email)
}

fn display_name(given: Option<String>, email: &str) -> ServiceResult<String> {
    let name = match given.as_deref().map(str::trim) {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ => email.split('@').next().unwrap_or(email).to_owned(),
    };
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ServiceError::Refused(format!(
            "the name must be at most {MAX_NAME} characters, without control characters"
        )));
    }
    Ok(name)
}

impl App {
    pub(crate) async fn create(
        &self,
        conn: &mut ConnState,
        email: String,
        password: Secret,
        name: Option<String>,
    ) -> ServiceResult<Reply> {
        let email = normalize_email(&email)?;
        let name = display_name(name, &email)?;
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
        let user = match self.blocking(move |s| Ok(s.create_user(&e, &n, &hash, now()))).await? {
            Ok(user) => user,
            Err(StoreError::EmailTaken) => {
                return Err(ServiceError::Refused(format!("an account with the email {email} already exists")));
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(user = %user.id, "account created");
        let token = self.open_session(conn, user.id).await?;
        Ok(Reply::Created(SessionInfo { id: user.id, name: user.name, email: user.email, token: Secret::new(token) }))
    }

    pub(crate) async fn login(&self, conn: &mut ConnState, email: String, password: Secret) -> ServiceResult<Reply> {
        // A malformed email cannot have an account: same answer as a wrong password.
        let email = normalize_email(&email).map_err(|_| ServiceError::Unauthorized)?;
        self.limiter.check_login(conn.ip(), &email).map_err(ServiceError::Refused)?;
        let lookup = email.clone();
        let account = self.blocking(move |s| s.account_by_email(&lookup)).await?;
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
    async fn check_password(&self, conn: &ConnState, user: babel_proto::UserId, password: Secret) -> ServiceResult<()> {
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

    pub(crate) async fn logout(&self, by: LogoutBy) -> ServiceResult<Reply> {
        let rec = match by {
            LogoutBy::Email { email, token } => {
                let rec = self.session_for_token(token.expose()).await?;
                let owner = rec.user;
                let user = self.blocking(move |s| s.user(owner)).await?;
                if user.is_none_or(|u| !u.email.eq_ignore_ascii_case(email.trim())) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(normalize_email("  Ann.Lee@Example.ORG ").unwrap(), "ann.lee@example.org");
        for bad in ["", "ann", "@x.org", "ann@", "ann@x", "a b@x.org", "a@b@c.org", "a@-x.org", "a@x..org"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(display_name(None, "ann@x.org").unwrap(), "ann");
        assert_eq!(display_name(Some("  ".into()), "ann@x.org").unwrap(), "ann");
        assert_eq!(display_name(Some(" Ann \"Lee\" ".into()), "ann@x.org").unwrap(), "Ann \"Lee\"");
        assert!(display_name(Some("x".repeat(65)), "a@x.org").is_err());
        assert!(display_name(Some("a\u{7}".into()), "a@x.org").is_err());
    }
}
