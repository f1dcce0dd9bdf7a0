//! `babel`: every Babel feature from a terminal, scriptable.
//!
//! Exit codes: 0 ok, 1 refused by the server (its reason on stderr), 2 usage
//! (a mistake on this side: arguments, not logged in, a file that will not
//! do), 3 cannot reach the server (or it is not a Babel server).

mod account;
mod calls;
mod chat;
mod quiet;
mod session;
mod term;
mod when;

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use babel_client::{Client, ClientError, Endpoint, ServerList, TlsOptions, Trust};
use babel_proto::{ContactRef, Presence, ReplyError};
use clap::{CommandFactory, Parser, Subcommand};
use serde_json::json;

use crate::session::Home;

/// Babel: voice calls with your contacts, from a terminal.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Server address: HOST:PORT, or tls://HOST:PORT for an encrypted
    /// connection (a server no authority vouches for is trusted on first use
    /// and pinned in `known_servers` in the home directory). A cluster's
    /// nodes as a comma-separated list, `a:7447,b:7447`: they are tried in
    /// turn, and when the node in use dies babel moves to another.
    #[arg(long, env = "BABEL_SERVER", default_value = "127.0.0.1:7447", global = true)]
    server: String,
    /// Trust TLS servers whose certificate this authority signed (a PEM
    /// file, e.g. a cluster's ca.pem from scripts/cluster-ca.sh), and no
    /// other: no trust on first use, so every node of a cluster is
    /// accepted without a new fingerprint and a stranger is refused.
    #[arg(long, env = "BABEL_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
    /// Accept only a TLS server with this certificate fingerprint (as
    /// `babel-server` prints it: SHA256:AB:CD:…).
    #[arg(long, env = "BABEL_TLS_FINGERPRINT", global = true)]
    tls_fingerprint: Option<babel_proto::Fingerprint>,
    /// Where the session is kept [default: the platform's config directory].
    #[arg(long, env = "BABEL_HOME", global = true)]
    home: Option<PathBuf>,
    /// Print one JSON document (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an account (password prompted on a terminal, else read from stdin).
    Register {
        /// Email address.
        #[arg(value_parser = email_arg)]
        email: String,
        /// Display name [default: the email's local part].
        #[arg(long)]
        name: Option<String>,
    },
    /// Log in; the session is kept in the home directory.
    Login {
        /// Email address.
        #[arg(value_parser = email_arg)]
        email: String,
    },
    /// End this session.
    Logout,
    /// Who is logged in here, on which server, and whether the session holds.
    Whoami,
    /// Delete the account everywhere (asks for the password on a terminal;
    /// scripts give it on stdin and add --yes).
    DeleteAccount {
        /// Do not ask on a terminal: the password comes from stdin.
        #[arg(long)]
        yes: bool,
    },
    /// List contacts with presence, or manage them.
    Contacts {
        #[command(subcommand)]
        action: Option<ContactsCommand>,
    },
    /// Call a contact (`q` cancels while it rings and hangs up later; `i`
    /// invites another contact into the call).
    Call {
        /// The contact's email.
        #[arg(value_parser = email_arg)]
        email: String,
        #[command(flatten)]
        audio: calls::AudioArgs,
    },
    /// Wait for calls (and answer them with --auto-answer); `q` or Ctrl-C
    /// stops.
    Listen {
        /// Answer every call without asking.
        #[arg(long)]
        auto_answer: bool,
        /// Exit after this many calls.
        #[arg(long)]
        calls: Option<u32>,
        #[command(flatten)]
        audio: calls::AudioArgs,
    },
    /// Send a message to a contact (the text from stdin when it is left
    /// out or is `-`; they read it when they come back if they are offline).
    Message {
        /// The contact's email.
        #[arg(value_parser = email_arg)]
        email: String,
        /// The text (several words are joined by spaces).
        text: Vec<String>,
    },
    /// The conversation with a contact (or every conversation), newest
    /// last; what it shows is marked read.
    Messages {
        /// The contact's email [default: every conversation].
        #[arg(value_parser = email_arg)]
        email: Option<String>,
        /// Older messages: those before this message id (the page above
        /// says which).
        #[arg(long)]
        before: Option<babel_proto::MessageId>,
        /// How many messages, 1-100.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
        /// Keep showing new messages as they arrive (and mark them read)
        /// until Ctrl-C.
        #[arg(long, conflicts_with = "before")]
        follow: bool,
    },
    /// Calls made and received, newest last; missed ones are marked.
    History {
        /// Older calls: those before this entry id.
        #[arg(long)]
        before: Option<babel_proto::EntryId>,
        /// How many calls, 1-100.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
    },
    /// Your account: name, password, sessions.
    Account {
        #[command(subcommand)]
        action: account::AccountCommand,
    },
    /// Choose how contacts see you: available, away, dnd (not rung) or
    /// invisible (shown offline); kept across sessions.
    Status {
        /// available, away, dnd or invisible.
        status: account::StatusArg,
    },
    /// Block someone: no contact, requests, calls or messages between you,
    /// and they are not told.
    Block {
        /// Their email.
        #[arg(value_parser = email_arg)]
        email: String,
    },
    /// Unblock someone (they are not made a contact again).
    Unblock {
        /// Their email.
        #[arg(value_parser = email_arg)]
        email: String,
    },
    /// The people you have blocked.
    Blocked,
    /// Audio input and output devices.
    Devices,
    /// Everything end to end on this machine: its own server on loopback,
    /// two users, a call (--server does not apply).
    Demo {
        /// Keep the callee's recording in this WAV file.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum ContactsCommand {
    /// Ask someone to be a contact.
    Add {
        /// Their email.
        #[arg(value_parser = email_arg)]
        email: String,
    },
    /// Remove a contact (or cancel a request).
    Remove {
        /// Their email.
        #[arg(value_parser = email_arg)]
        email: String,
    },
    /// Accept a contact request.
    Accept {
        /// The asker's email.
        #[arg(value_parser = email_arg)]
        email: String,
    },
    /// Decline a contact request.
    Decline {
        /// The asker's email.
        #[arg(value_parser = email_arg)]
        email: String,
    },
    /// Requests waiting for my answer.
    Requests,
}

/// An email as the server stores it (its canonical form: NFKC, case
/// folded, the domain in U-labels), or a usage error.
fn email_arg(s: &str) -> Result<String, String> {
    babel_server::identity::canonical_email(s)
        .map(|c| c.email)
        .map_err(|_| format!("`{}` is not an email address", s.trim()))
}

/// Two spellings of one address compare equal (`ＡＮＮ@…`, A-labels).
fn same_email(a: &str, b: &str) -> bool {
    let canon = |e: &str| email_arg(e).unwrap_or_else(|_| e.trim().to_lowercase());
    canon(a) == canon(b)
}

/// How long the server may take to answer a request: a silent peer (an
/// HTTP server waiting for a request line) is given up on within this.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(4);

/// A failure, sorted by the exit code it maps to.
#[derive(Debug)]
enum Failure {
    Refused(String),
    Usage(String),
    Unreachable(String),
    Other(anyhow::Error),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Connect { .. } | ClientError::Untrusted { .. } | ClientError::NoServer(_) => {
                Failure::Unreachable(e.to_string())
            }
            ClientError::Address(a) => Failure::Usage(a),
            ClientError::NotLoggedIn => Failure::Usage("not logged in: run `babel login EMAIL` first".into()),
            ClientError::Protocol(detail) => Failure::Unreachable(format!(
                "this is not a Babel server: its answer does not follow Babel's protocol ({detail})"
            )),
            ClientError::Timeout(t) => Failure::Unreachable(format!(
                "the server did not answer within {} s: it is overloaded, or this is not a Babel server",
                t.as_secs()
            )),
            ClientError::Server(ReplyError::Refused(r)) => Failure::Refused(r),
            ClientError::Server(ReplyError::Unauthorized) => {
                Failure::Refused("wrong password, or the session has ended: log in again".into())
            }
            other => Failure::Other(other.into()),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<ClientError>() {
            Ok(c) => c.into(),
            Err(e) => Failure::Other(e),
        }
    }
}

/// What a command did: the data for `--json`, sentences for people.
#[derive(Debug)]
pub struct Done {
    json: serde_json::Value,
    text: String,
}

impl Done {
    fn new(json: serde_json::Value, text: impl Into<String>) -> Done {
        Done { json, text: text.into() }
    }
}

type Outcome = Result<Done, Failure>;

fn read_password(prompt: &str) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        Ok(rpassword::prompt_password(prompt)?)
    } else {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        Ok(s.lines().next().unwrap_or_default().to_owned())
    }
}

async fn logged_in(cli: &Cli, home: &Home) -> Result<Client, Failure> {
    let session = home.load()?.ok_or_else(|| Failure::Usage("not logged in: run `babel login EMAIL` first".into()))?;
    let server = if cli.server_given() { cli.server.clone() } else { session.server.clone() };
    let client = Client::resume_at(cli.endpoint(home, &server)?, session.info).await?.with_timeout(ANSWER_TIMEOUT);
    report_first_use(&client);
    Ok(client)
}

/// Connects to `--server` (for `register` and `login`).
async fn connect(cli: &Cli, home: &Home) -> Result<Client, Failure> {
    let client = Client::connect_to(cli.endpoint(home, &cli.server)?).await?.with_timeout(ANSWER_TIMEOUT);
    report_first_use(&client);
    Ok(client)
}

/// Says so when a TLS server was just trusted for the first time, so the
/// user can compare the fingerprint with the one the server printed.
fn report_first_use(client: &Client) {
    if let Some(Trust::FirstUse { fingerprint, saved_to }) = client.trust() {
        let saved = saved_to.as_ref().map(|f| format!("; saved to {}", f.display())).unwrap_or_default();
        eprintln!(
            "babel: first connection to {}: trusting its certificate {fingerprint}{saved}. \
             Check it against the fingerprint babel-server printed when it started.",
            client.addr()
        );
    }
}

impl Cli {
    fn endpoint(&self, home: &Home, server: &str) -> Result<Endpoint, Failure> {
        let mut tls = TlsOptions { pin: self.tls_fingerprint, ..TlsOptions::in_dir(home.dir()) };
        if let Some(file) = &self.tls_ca {
            let roots = babel_client::tls::read_authority(file).map_err(|e| Failure::Usage(e.to_string()))?;
            tls = tls.with_authority(roots);
        }
        Ok(Endpoint::with_tls(server, Arc::new(tls))?)
    }

    fn server_flag_given() -> bool {
        std::env::args().any(|a| a == "--server" || a.starts_with("--server="))
    }

    fn server_given(&self) -> bool {
        Self::server_flag_given() || std::env::var_os("BABEL_SERVER").is_some()
    }
}

/// A server address (or list) that cannot work is the user's mistake (exit 2).
fn check_server(server: &str) -> Result<(), Failure> {
    server.parse::<ServerList>().map(|_| ()).map_err(|e| Failure::Usage(e.to_string()))
}

pub(crate) async fn contact_id_by_email(
    client: &mut Client,
    email: &str,
    pending_only: bool,
) -> Result<babel_proto::UserId, Failure> {
    let want = email_arg(email).unwrap_or_else(|_| email.trim().to_lowercase());
    if pending_only {
        let reqs = client.contact_requests().await?;
        return reqs
            .iter()
            .find(|u| same_email(&u.email, &want))
            .map(|u| u.id)
            .ok_or_else(|| Failure::Refused(format!("there is no contact request from {want}")));
    }
    let list = client.contacts().await?;
    list.iter()
        .find(|c| same_email(&c.user.email, &want))
        .map(|c| c.user.id)
        .ok_or_else(|| Failure::Refused(format!("{want} is not in your contacts")))
}

async fn run(cli: &Cli) -> Outcome {
    let home = Home::new(cli.home.clone())?;
    let needs_server = !matches!(cli.command, Command::Devices | Command::Demo { .. } | Command::Completions { .. });
    if needs_server {
        check_server(&cli.server)?;
    }
    match &cli.command {
        Command::Register { email, name } => {
            let password = read_password("Choose a password: ")?;
            let mut c = connect(cli, &home).await?;
            let s = c.create(email, &password, name.as_deref()).await?;
            home.save(&cli.server, &s)?;
            let text = format!("Created the account {} <{}> and logged in.", s.name, s.email);
            Ok(Done::new(json!({"id": s.id, "name": s.name, "email": s.email}), text))
        }
        Command::Login { email } => {
            let password = read_password("Password: ")?;
            let mut c = connect(cli, &home).await?;
            let s = c.login(email, &password).await?;
            home.save(&cli.server, &s)?;
            let text = format!("Logged in as {} <{}>.", s.name, s.email);
            Ok(Done::new(json!({"id": s.id, "name": s.name, "email": s.email}), text))
        }
        Command::Logout => {
            let mut c = logged_in(cli, &home).await?;
            let me = c.session().map(|s| s.email.clone()).unwrap_or_default();
            c.logout().await?;
            home.forget()?;
            Ok(Done::new(json!({"logged_out": true}), format!("Logged out ({me}).")))
        }
        Command::Whoami => whoami(cli, &home).await,
        Command::DeleteAccount { yes } => delete_account(cli, &home, *yes).await,
        Command::Contacts { action } => {
            let mut c = logged_in(cli, &home).await?;
            contacts(&mut c, action.as_ref()).await
        }
        Command::Call { email, audio } => {
            let ready = audio.check()?;
            let mut c = logged_in(cli, &home).await?;
            let id = contact_id_by_email(&mut c, email, false).await?;
            calls::call(c, id, email, audio, ready, !cli.json).await
        }
        Command::Listen { auto_answer, calls: n, audio } => {
            let ready = audio.check()?;
            let c = logged_in(cli, &home).await?;
            calls::listen(c, *auto_answer, *n, audio, ready, !cli.json).await
        }
        Command::Message { email, text } => {
            let text = chat::text_arg(text)?;
            let mut c = logged_in(cli, &home).await?;
            chat::message(&mut c, email, &text).await
        }
        Command::Messages { email, before, limit, follow } => {
            let mut c = logged_in(cli, &home).await?;
            if *follow {
                chat::follow(c, email.as_deref(), *limit, cli.json).await
            } else {
                chat::messages(&mut c, email.as_deref(), *before, *limit).await
            }
        }
        Command::History { before, limit } => {
            let mut c = logged_in(cli, &home).await?;
            chat::history(&mut c, *before, *limit).await
        }
        Command::Account { action } => account::account(cli, &home, action).await,
        Command::Status { status } => {
            let mut c = logged_in(cli, &home).await?;
            account::status(&mut c, *status).await
        }
        Command::Block { email } => {
            let mut c = logged_in(cli, &home).await?;
            account::block(&mut c, email).await
        }
        Command::Unblock { email } => {
            let mut c = logged_in(cli, &home).await?;
            account::unblock(&mut c, email).await
        }
        Command::Blocked => {
            let mut c = logged_in(cli, &home).await?;
            account::blocked(&mut c).await
        }
        Command::Devices => devices(),
        Command::Demo { output } => {
            if Cli::server_flag_given() {
                return Err(Failure::Usage(
                    "`babel demo` runs its own server on loopback; --server does not apply to it".into(),
                ));
            }
            calls::demo(output.as_deref(), !cli.json).await
        }
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "babel", &mut buf);
            write_stdout(&buf);
            Ok(Done::new(serde_json::Value::Null, ""))
        }
    }
}

/// `babel whoami`: the account, the server, and whether the session holds.
async fn whoami(cli: &Cli, home: &Home) -> Outcome {
    let saved = home.load()?.ok_or_else(|| Failure::Usage("not logged in: run `babel login EMAIL` first".into()))?;
    let server = if cli.server_given() { cli.server.clone() } else { saved.server.clone() };
    let mut c = logged_in(cli, home).await?;
    // Any authenticated request tells whether the session still holds.
    let (valid, list) = match c.contacts().await {
        Ok(list) => (true, list),
        Err(ClientError::Server(ReplyError::Unauthorized)) => (false, Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let info = &saved.info;
    if !valid {
        return Err(Failure::Refused(format!(
            "{} <{}> on {server}: that session has ended; run `babel login {}`",
            info.name, info.email, info.email
        )));
    }
    let contacts = list.iter().filter(|e| e.status != Presence::Pending).count();
    let online = list.iter().filter(|e| e.status.is_online()).count();
    let json = json!({
        "id": info.id, "name": info.name, "email": info.email, "server": server, "session": "valid",
        "contacts": contacts, "contacts_online": online,
    });
    let text = format!(
        "{} <{}> on {server}.\nYour contacts see you online while `babel listen` or a call runs; \
         {online} of your {contacts} contacts are online now.",
        info.name, info.email
    );
    Ok(Done::new(json, text))
}

/// `babel delete-account`: only with the password, asked on a terminal.
async fn delete_account(cli: &Cli, home: &Home, yes: bool) -> Outcome {
    let interactive = std::io::stdin().is_terminal() && !yes;
    if !interactive && !yes {
        return Err(Failure::Usage(
            "deleting an account cannot be undone: on a terminal babel asks for the password; \
             a script gives the password on stdin and adds --yes"
                .into(),
        ));
    }
    let mut c = logged_in(cli, home).await?;
    let me = c.session().map(|s| s.email.clone()).unwrap_or_default();
    let password = if interactive {
        rpassword::prompt_password(format!("This deletes {me} everywhere, for good. Password: "))
            .map_err(anyhow::Error::from)?
    } else {
        read_password("")?
    };
    if password.is_empty() {
        return Err(Failure::Usage("no password given: nothing was deleted".into()));
    }
    c.delete_account_with_password(&password).await.map_err(|e| match e {
        ClientError::Server(ReplyError::Refused(r)) => Failure::Refused(format!("{r}: nothing was deleted")),
        other => other.into(),
    })?;
    home.forget()?;
    Ok(Done::new(json!({"deleted": true}), format!("Deleted the account {me}.")))
}

/// `babel contacts …`.
async fn contacts(c: &mut Client, action: Option<&ContactsCommand>) -> Outcome {
    match action {
        None => {
            let list = c.contacts().await?;
            let waiting = c.contact_requests().await?;
            let unread = c.unread().await?;
            let unread_from = |id| unread.iter().find(|u| u.contact_id == id).map_or(0, |u| u.count);
            let mut text = String::new();
            if list.is_empty() {
                text.push_str("No contacts yet: `babel contacts add EMAIL` asks someone.\n");
            }
            let mut rows = Vec::with_capacity(list.len());
            for e in &list {
                let status = if e.status == Presence::Pending { "asked" } else { e.status.as_str() };
                let n = unread_from(e.user.id);
                let unread =
                    if n > 0 { format!("  ({n} unread: `babel messages {}`)", e.user.email) } else { String::new() };
                text.push_str(&format!("{status:<8} {} <{}>{unread}\n", chat::printable(&e.user.name), e.user.email));
                let mut row = serde_json::to_value(e).map_err(anyhow::Error::from)?;
                if let Some(o) = row.as_object_mut() {
                    o.insert("unread".into(), json!(n));
                }
                rows.push(row);
            }
            if !waiting.is_empty() {
                let who: Vec<String> =
                    waiting.iter().map(|u| format!("{} <{}>", chat::printable(&u.name), u.email)).collect();
                let n = if waiting.len() == 1 {
                    "1 request is".to_owned()
                } else {
                    format!("{} requests are", waiting.len())
                };
                text.push_str(&format!(
                    "{n} waiting for your answer: {} (`babel contacts accept EMAIL`)",
                    who.join(", ")
                ));
            }
            Ok(Done::new(json!(rows), text.trim_end()))
        }
        Some(ContactsCommand::Add { email }) => {
            c.add_contact(email).await?;
            Ok(Done::new(
                json!({"requested": email}),
                format!("Asked {email} to be your contact; they show as \"asked\" until they accept."),
            ))
        }
        Some(ContactsCommand::Remove { email }) => {
            c.remove_contact(ContactRef::Email(email.clone())).await?;
            Ok(Done::new(json!({"removed": email}), format!("Removed {email}.")))
        }
        Some(ContactsCommand::Accept { email }) => {
            let id = contact_id_by_email(c, email, true).await?;
            c.accept_contact(id).await?;
            Ok(Done::new(json!({"accepted": email}), format!("{email} is now a contact.")))
        }
        Some(ContactsCommand::Decline { email }) => {
            let id = contact_id_by_email(c, email, true).await?;
            c.decline_contact(id).await?;
            Ok(Done::new(json!({"declined": email}), format!("Declined {email}'s request.")))
        }
        Some(ContactsCommand::Requests) => {
            let reqs = c.contact_requests().await?;
            let text = if reqs.is_empty() {
                "No requests are waiting.".to_owned()
            } else {
                reqs.iter()
                    .map(|u| format!("{} <{}> wants to be your contact", chat::printable(&u.name), u.email))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok(Done::new(serde_json::to_value(reqs).map_err(anyhow::Error::from)?, text))
        }
    }
}

/// `babel devices`.
fn devices() -> Outcome {
    use babel_media::device::DeviceInfo;
    let inputs = babel_media::device::list_inputs().map_err(anyhow::Error::from)?;
    let outputs = babel_media::device::list_outputs().map_err(anyhow::Error::from)?;
    let show = |d: &DeviceInfo| json!({"name": d.name, "default": d.is_default, "sample_rate": d.sample_rate, "channels": d.channels});
    let list = |kind: &str, ds: &[DeviceInfo]| {
        let mut t = format!("{kind}:");
        if ds.is_empty() {
            t.push_str(" none");
        }
        for d in ds {
            t.push_str(&format!("\n  {}{}", d.name, if d.is_default { " (default)" } else { "" }));
        }
        t
    };
    let text = format!("{}\n{}", list("Microphones", &inputs), list("Speakers", &outputs));
    Ok(Done::new(
        json!({
            "inputs": inputs.iter().map(show).collect::<Vec<_>>(),
            "outputs": outputs.iter().map(show).collect::<Vec<_>>(),
        }),
        text,
    ))
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
pub(crate) fn write_stdout(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes).and_then(|()| out.flush());
}

/// Prints a result for a person (sentences) or a script (`--json`).
fn print(json_mode: bool, done: &Done) {
    if json_mode {
        if !done.json.is_null() {
            write_stdout(format!("{}\n", done.json).as_bytes());
        }
    } else if !done.text.is_empty() {
        write_stdout(format!("{}\n", done.text).as_bytes());
    }
}

/// Prints a failure: the message on stderr, and under `--json` the same as
/// a JSON document on stdout.
fn report(json_mode: bool, msg: &str) {
    if json_mode {
        write_stdout(format!("{}\n", json!({"error": msg})).as_bytes());
    }
    term::say(&format!("babel: {msg}"));
}

fn main() -> ExitCode {
    term::remember_stderr();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let json_mode = std::env::args().any(|a| a == "--json");
            if json_mode && !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let detail = e.to_string();
                let first = detail.lines().next().unwrap_or_default().trim_start_matches("error: ").to_owned();
                write_stdout(format!("{}\n", json!({"error": first})).as_bytes());
            }
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    // ALSA's own lines must not reach the terminal: only the commands that
    // open devices pay for the filter.
    let filter = matches!(cli.command, Command::Call { .. } | Command::Listen { .. } | Command::Devices)
        .then(quiet::StderrFilter::install)
        .flatten();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BABEL_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("babel: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(run(&cli));
    runtime.shutdown_timeout(Duration::from_secs(1));
    let code = match outcome {
        Ok(done) => {
            print(cli.json, &done);
            ExitCode::SUCCESS
        }
        Err(Failure::Refused(reason)) => {
            report(cli.json, &reason);
            ExitCode::from(1)
        }
        Err(Failure::Usage(msg)) => {
            report(cli.json, &msg);
            ExitCode::from(2)
        }
        Err(Failure::Unreachable(msg)) => {
            report(cli.json, &msg);
            ExitCode::from(3)
        }
        Err(Failure::Other(e)) => {
            report(cli.json, &format!("{e:#}"));
            ExitCode::from(1)
        }
    };
    drop(filter);
    code
}
