//! `babel account …`, `babel status`, `babel block`, `babel unblock`,
//! `babel blocked`.

use std::io::{IsTerminal, Read};

use babel_client::{Client, ClientError};
use babel_proto::{ChosenStatus, ContactRef, ReplyError};
use clap::{Subcommand, ValueEnum};
use serde_json::json;

use crate::chat::printable;
use crate::session::Home;
use crate::{Cli, Done, Failure, Outcome, email_arg, logged_in, same_email, when};

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Change your display name (contacts see the new one at once).
    Rename {
        /// The new name (several words are joined by spaces).
        #[arg(required = true)]
        name: Vec<String>,
    },
    /// Change your password (asked twice on a terminal; a script gives the
    /// current one and the new one on two lines of stdin). Every other
    /// session of the account ends; this one goes on.
    Password,
    /// Where the account is logged in.
    Sessions,
    /// End one session (`babel account sessions` lists them).
    EndSession {
        /// The session's id.
        id: String,
    },
}

/// A status to choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    /// Online while `babel listen` or a call runs.
    Available,
    /// Shown as away; calls still ring.
    Away,
    /// Do not disturb: calls are refused, messages still arrive.
    Dnd,
    /// Shown as offline to everyone.
    Invisible,
}

impl StatusArg {
    fn chosen(self) -> ChosenStatus {
        match self {
            StatusArg::Available => ChosenStatus::Available,
            StatusArg::Away => ChosenStatus::Away,
            StatusArg::Dnd => ChosenStatus::Dnd,
            StatusArg::Invisible => ChosenStatus::Invisible,
        }
    }
}

/// The current and new password: from the terminal without echo (the new
/// one twice), or the first two lines of stdin.
fn passwords() -> Result<(String, String), Failure> {
    let io = |e: std::io::Error| Failure::Other(e.into());
    if std::io::stdin().is_terminal() {
        let current = rpassword::prompt_password("Current password: ").map_err(io)?;
        let new = rpassword::prompt_password("New password: ").map_err(io)?;
        let again = rpassword::prompt_password("New password again: ").map_err(io)?;
        if new != again {
            return Err(Failure::Usage("the two new passwords differ: nothing was changed".into()));
        }
        Ok((current, new))
    } else {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(io)?;
        let mut lines = s.lines();
        match (lines.next(), lines.next()) {
            (Some(cur), Some(new)) if !cur.is_empty() && !new.is_empty() => Ok((cur.to_owned(), new.to_owned())),
            _ => Err(Failure::Usage(
                "give the current password and the new one on two lines of stdin: nothing was changed".into(),
            )),
        }
    }
}

/// `babel account …`.
pub async fn account(cli: &Cli, home: &Home, action: &AccountCommand) -> Outcome {
    match action {
        AccountCommand::Rename { name } => {
            let name = name.join(" ");
            let mut c = logged_in(cli, home).await?;
            let me = c.rename(&name).await?;
            // The saved session shows the new name too (`whoami`).
            if let Some(mut saved) = home.load()? {
                saved.info.name = me.name.clone();
                home.save(&saved.server, &saved.info)?;
            }
            let text = format!("You are now {} <{}>.", printable(&me.name), me.email);
            Ok(Done::new(serde_json::to_value(&me).map_err(anyhow::Error::from)?, text))
        }
        AccountCommand::Password => {
            let (current, new) = passwords()?;
            let mut c = logged_in(cli, home).await?;
            c.change_password(&current, &new).await.map_err(|e| match e {
                ClientError::Server(ReplyError::Refused(r)) => Failure::Refused(format!("{r}: nothing was changed")),
                other => other.into(),
            })?;
            Ok(Done::new(
                json!({"changed": true}),
                "Password changed; every other session of the account has ended (this one goes on).",
            ))
        }
        AccountCommand::Sessions => {
            let mut c = logged_in(cli, home).await?;
            let list = c.sessions().await?;
            let mut text = String::new();
            for s in &list {
                let this = if s.current { "  (this one)" } else { "" };
                text.push_str(&format!(
                    "{}  {}  since {}, last used {}{this}\n",
                    s.session_id,
                    printable(&s.address),
                    when::short(&s.created_at),
                    when::short(&s.last_used)
                ));
            }
            if list.len() > 1 {
                text.push_str("`babel account end-session ID` ends one.");
            }
            Ok(Done::new(serde_json::to_value(&list).map_err(anyhow::Error::from)?, text.trim_end()))
        }
        AccountCommand::EndSession { id } => {
            let mut c = logged_in(cli, home).await?;
            let list = c.sessions().await?;
            let Some(s) = list.iter().find(|s| s.session_id.to_string() == id.trim()) else {
                return Err(Failure::Refused(format!(
                    "there is no session {} (`babel account sessions` lists them)",
                    id.trim()
                )));
            };
            let current = s.current;
            c.end_session(s.session_id).await?;
            let text = if current {
                home.forget()?;
                format!("Ended session {id}, this one: run `babel login EMAIL` to use babel here again.")
            } else {
                format!("Ended session {id}.")
            };
            Ok(Done::new(json!({"ended": id, "current": current}), text))
        }
    }
}

/// `babel status …`.
pub async fn status(c: &mut Client, status: StatusArg) -> Outcome {
    c.set_status(status.chosen()).await?;
    let text = match status {
        StatusArg::Available => "You are available: contacts see you online while `babel listen` or a call runs.",
        StatusArg::Away => "You are away: contacts see it; calls still ring.",
        StatusArg::Dnd => "Do not disturb: calls to you are refused; messages still arrive.",
        StatusArg::Invisible => "You are invisible: contacts see you offline; calls to you get the offline refusal.",
    };
    Ok(Done::new(json!({"status": status.chosen().as_str()}), text))
}

/// `babel block EMAIL` (anyone, contact or not).
pub async fn block(c: &mut Client, email: &str) -> Outcome {
    c.block(ContactRef::Email(email.to_owned())).await?;
    Ok(Done::new(
        json!({"blocked": email}),
        format!("Blocked {email}: no contact, requests, calls or messages between you; they are not told."),
    ))
}

/// `babel unblock EMAIL`.
pub async fn unblock(c: &mut Client, email: &str) -> Outcome {
    let want = email_arg(email).unwrap_or_else(|_| email.trim().to_lowercase());
    let list = c.blocked().await?;
    let Some(u) = list.iter().find(|u| same_email(&u.email, &want)) else {
        return Err(Failure::Refused(format!("{want} is not blocked")));
    };
    c.unblock(u.id).await?;
    Ok(Done::new(
        json!({"unblocked": want}),
        format!("Unblocked {want}; they are not a contact again until one of you asks."),
    ))
}

/// `babel blocked`.
pub async fn blocked(c: &mut Client) -> Outcome {
    let list = c.blocked().await?;
    let text = if list.is_empty() {
        "You have blocked nobody.".to_owned()
    } else {
        list.iter().map(|u| format!("{} <{}>", printable(&u.name), u.email)).collect::<Vec<_>>().join("\n")
    };
    Ok(Done::new(serde_json::to_value(&list).map_err(anyhow::Error::from)?, text))
}
