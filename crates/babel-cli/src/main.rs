//! `babel`: every Babel feature from a terminal, scriptable.
//!
//! Exit codes: 0 ok, 1 refused by the server (its reason on stderr), 2 usage,
//! 3 cannot reach the server.

mod calls;
mod session;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use babel_client::{Client, ClientError, Endpoint, TlsOptions, Trust};
use babel_proto::{ContactRef, ReplyError};
use clap::{CommandFactory, Parser, Subcommand};
use serde_json::json;

use crate::session::Home;

/// Babel: voice calls with your contacts, from a terminal.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Server address: HOST:PORT, or tls://HOST:PORT for an encrypted
    /// connection (a server no authority vouches for is trusted on first use
    /// and pinned in `known_servers` in the home directory).
    #[arg(long, env = "BABEL_SERVER", default_value = "127.0.0.1:7447", global = true)]
    server: String,
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
        email: String,
        /// Display name [default: the email's local part].
        #[arg(long)]
        name: Option<String>,
    },
    /// Log in; the session is kept in the home directory.
    Login {
        /// Email address.
        email: String,
    },
    /// End this session.
    Logout,
    /// Delete the account everywhere.
    DeleteAccount,
    /// List contacts with presence, or manage them.
    Contacts {
        #[command(subcommand)]
        action: Option<ContactsCommand>,
    },
    /// Call a contact.
    Call {
        /// The contact's email.
        email: String,
        #[command(flatten)]
        audio: calls::AudioArgs,
    },
    /// Wait for calls (and answer them with --auto-answer).
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
    /// Audio input and output devices.
    Devices,
    /// Everything end to end on this machine: a server, two users, a call.
    Demo,
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
        email: String,
    },
    /// Remove a contact (or cancel a request).
    Remove {
        /// Their email.
        email: String,
    },
    /// Accept a contact request.
    Accept {
        /// The asker's email.
        email: String,
    },
    /// Decline a contact request.
    Decline {
        /// The asker's email.
        email: String,
    },
    /// Requests waiting for my answer.
    Requests,
}

/// A failure, sorted by the exit code it maps to.
#[derive(Debug)]
enum Failure {
    Refused(String),
    Unreachable(String),
    Other(anyhow::Error),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Connect { .. } | ClientError::Untrusted { .. } | ClientError::Address(_) => {
                Failure::Unreachable(e.to_string())
            }
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

type Outcome = Result<serde_json::Value, Failure>;

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
    let session =
        home.load()?.ok_or_else(|| Failure::Refused("not logged in: run `babel login EMAIL` first".into()))?;
    let server = if cli.server_given() { cli.server.clone() } else { session.server.clone() };
    let client = Client::resume_at(cli.endpoint(home, &server)?, session.info).await?;
    report_first_use(&client);
    Ok(client)
}

/// Connects to `--server` (for `register` and `login`).
async fn connect(cli: &Cli, home: &Home) -> Result<Client, Failure> {
    let client = Client::connect_to(cli.endpoint(home, &cli.server)?).await?;
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
        let tls = TlsOptions { pin: self.tls_fingerprint, ..TlsOptions::in_dir(home.dir()) };
        Ok(Endpoint::with_tls(server, Arc::new(tls))?)
    }

    fn server_given(&self) -> bool {
        std::env::args().any(|a| a == "--server" || a.starts_with("--server="))
            || std::env::var_os("BABEL_SERVER").is_some()
    }
}

async fn contact_id_by_email(
    client: &mut Client,
    email: &str,
    pending_only: bool,
) -> Result<babel_proto::UserId, Failure> {
    let want = email.trim().to_lowercase();
    if pending_only {
        let reqs = client.contact_requests().await?;
        return reqs
            .iter()
            .find(|u| u.email == want)
            .map(|u| u.id)
            .ok_or_else(|| Failure::Refused(format!("there is no contact request from {want}")));
    }
    let list = client.contacts().await?;
    list.iter()
        .find(|c| c.user.email == want)
        .map(|c| c.user.id)
        .ok_or_else(|| Failure::Refused(format!("{want} is not in your contacts")))
}

async fn run(cli: &Cli) -> Outcome {
    let home = Home::new(cli.home.clone())?;
    match &cli.command {
        Command::Register { email, name } => {
            let password = read_password("Choose a password: ")?;
            let mut c = connect(cli, &home).await?;
            let s = c.create(email, &password, name.as_deref()).await?;
            home.save(&cli.server, &s)?;
            Ok(json!({"id": s.id, "name": s.name, "email": s.email}))
        }
        Command::Login { email } => {
            let password = read_password("Password: ")?;
            let mut c = connect(cli, &home).await?;
            let s = c.login(email, &password).await?;
            home.save(&cli.server, &s)?;
            Ok(json!({"id": s.id, "name": s.name, "email": s.email}))
        }
        Command::Logout => {
            let mut c = logged_in(cli, &home).await?;
            c.logout().await?;
            home.forget()?;
            Ok(json!({"logged_out": true}))
        }
        Command::DeleteAccount => {
            let mut c = logged_in(cli, &home).await?;
            c.delete_account().await?;
            home.forget()?;
            Ok(json!({"deleted": true}))
        }
        Command::Contacts { action } => {
            let mut c = logged_in(cli, &home).await?;
            match action {
                None => Ok(serde_json::to_value(c.contacts().await?).map_err(anyhow::Error::from)?),
                Some(ContactsCommand::Add { email }) => {
                    c.add_contact(email).await?;
                    Ok(json!({"requested": email}))
                }
                Some(ContactsCommand::Remove { email }) => {
                    c.remove_contact(ContactRef::Email(email.clone())).await?;
                    Ok(json!({"removed": email}))
                }
                Some(ContactsCommand::Accept { email }) => {
                    let id = contact_id_by_email(&mut c, email, true).await?;
                    c.accept_contact(id).await?;
                    Ok(json!({"accepted": email}))
                }
                Some(ContactsCommand::Decline { email }) => {
                    let id = contact_id_by_email(&mut c, email, true).await?;
                    c.decline_contact(id).await?;
                    Ok(json!({"declined": email}))
                }
                Some(ContactsCommand::Requests) => {
                    Ok(serde_json::to_value(c.contact_requests().await?).map_err(anyhow::Error::from)?)
                }
            }
        }
        Command::Call { email, audio } => {
            let mut c = logged_in(cli, &home).await?;
            let id = contact_id_by_email(&mut c, email, false).await?;
            calls::call(c, id, audio, !cli.json).await
        }
        Command::Listen { auto_answer, calls: n, audio } => {
            let c = logged_in(cli, &home).await?;
            calls::listen(c, *auto_answer, *n, audio, !cli.json).await
        }
        Command::Devices => {
            let inputs = babel_media::device::list_inputs().map_err(anyhow::Error::from)?;
            let outputs = babel_media::device::list_outputs().map_err(anyhow::Error::from)?;
            let show = |d: &babel_media::device::DeviceInfo| json!({"name": d.name, "default": d.is_default, "sample_rate": d.sample_rate, "channels": d.channels});
            Ok(json!({
                "inputs": inputs.iter().map(show).collect::<Vec<_>>(),
                "outputs": outputs.iter().map(show).collect::<Vec<_>>(),
            }))
        }
        Command::Demo => calls::demo(!cli.json).await,
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "babel", &mut std::io::stdout());
            Ok(serde_json::Value::Null)
        }
    }
}

/// Prints a result for a person (plain) or a script (`--json`).
fn print(json_mode: bool, value: &serde_json::Value) {
    if value.is_null() {
        return;
    }
    if json_mode {
        println!("{value}");
        return;
    }
    match value {
        serde_json::Value::Array(rows) if rows.is_empty() => println!("(none)"),
        serde_json::Value::Array(rows) => {
            for r in rows {
                let email = r["email"].as_str().unwrap_or_default();
                let name = r["name"].as_str().unwrap_or_default();
                match r["status"].as_str() {
                    Some(st) => println!("{st:<8} {name} <{email}>"),
                    None => println!("{name} <{email}>"),
                }
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match v {
                    serde_json::Value::String(s) => println!("{k}: {s}"),
                    serde_json::Value::Array(items) => {
                        println!("{k}:");
                        for i in items {
                            println!(
                                "  {}",
                                i.get("name").and_then(|n| n.as_str()).map_or(i.to_string(), str::to_owned)
                            );
                        }
                    }
                    other => println!("{k}: {other}"),
                }
            }
        }
        other => println!("{other}"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    match runtime.block_on(run(&cli)) {
        Ok(v) => {
            print(cli.json, &v);
            ExitCode::SUCCESS
        }
        Err(Failure::Refused(reason)) => {
            if cli.json {
                println!("{}", json!({"error": reason}));
            }
            eprintln!("babel: {reason}");
            ExitCode::from(1)
        }
        Err(Failure::Unreachable(msg)) => {
            if cli.json {
                println!("{}", json!({"error": msg}));
            }
            eprintln!("babel: {msg}");
            ExitCode::from(3)
        }
        Err(Failure::Other(e)) => {
            if cli.json {
                println!("{}", json!({"error": format!("{e:#}")}));
            }
            eprintln!("babel: {e:#}");
            ExitCode::from(1)
        }
    }
}
