//! The async client library every Babel program uses to talk to a server.
//!
//! * [`Client`]: one request-mode connection; every route as a typed method.
//!   It remembers the session from `create`/`login` (or one given with
//!   [`Client::resume`]) and reconnects with backoff when the connection was
//!   lost between requests (checked before each request). A request that was in flight when the connection
//!   broke is not retried (it may have been applied): it fails with
//!   [`ClientError::Disconnected`].
//! * [`EventStream`]: the push channel (`/events`) as a `Stream` of
//!   [`Event`]s, reconnecting by itself; after a reconnection it yields
//!   [`Event::Reconnected`] so the program can re-read its state.
//!   [`EventStream::connection`] says when it is lost (a close, or
//!   [`EVENT_SILENCE`] without even a `/ping`), at once, not only once it
//!   is back.
//! * [`CallChannel`]: a call channel (`/connect_call`) to send and receive
//!   `/send` frames through the server.
//!
//! * Messages and call history: [`Client::send_message`],
//!   [`Client::messages`], [`Client::mark_read`], [`Client::unread`],
//!   [`Client::call_history`] (in `messages.rs`).
//! * [`tls`]: `tls://` addresses and how a TLS server is trusted (authority,
//!   pinned fingerprint, or first use recorded in a known-servers file; a
//!   cluster's own authority with [`TlsOptions::with_authority`]).
//! * [`ServerList`] and [`Endpoint`]: a cluster's nodes (`a:7447,b:7447`),
//!   tried in turn, each attempt bounded by [`ATTEMPT_TIMEOUT`]. Every
//!   connection (requests, the event stream, call channels) goes to the
//!   node that worked last and moves on when it fails: a node that dies
//!   costs the event stream one `Disconnected`/`Reconnected` pair, with the
//!   same session, and requests follow the stream to its new node.
//!
//! Not here: audio, codecs, media encryption, UDP (see `babel-media`).

mod account;
mod conn;
mod events;
mod messages;
mod servers;
pub mod tls;

use std::time::Duration;

use babel_proto::{
    Answer, CallId, CallJoined, CallStarted, ChannelFrame, ClientRequest, ContactEntry, ContactRef, Credentials,
    LogoutBy, MediaSetup, RawRequest, ReplyError, Secret, SendData, SessionInfo, User, UserId,
};
use bytes::Bytes;

pub use conn::{ATTEMPT_TIMEOUT, Conn, Endpoint};
pub use events::{EVENT_SILENCE, Event, EventStream};
pub use servers::ServerList;
pub use tls::{ServerAddr, TlsOptions, Trust, Untrusted};

/// What can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached.
    #[error("cannot reach the server at {addr}: {source}")]
    Connect {
        /// Where we tried.
        addr: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The server address could not be read.
    #[error("{0}")]
    Address(String),
    /// The TLS server's certificate was refused.
    #[error("refusing the server at {server}: {why}")]
    Untrusted {
        /// The server.
        server: String,
        /// Why its certificate was refused.
        why: Box<Untrusted>,
    },
    /// The connection broke while a request was in flight.
    #[error("the connection to the server was lost")]
    Disconnected,
    /// The server answered with an error status.
    #[error(transparent)]
    Server(#[from] ReplyError),
    /// The server sent something this client cannot read.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A route that needs a session was called before `login`/`create`.
    #[error("not logged in")]
    NotLoggedIn,
    /// The server took too long to answer.
    #[error("the server did not answer within {0:?}")]
    Timeout(Duration),
    /// No server of a list could be used: why, for each one, in the order
    /// they were tried (each error names its server).
    #[error("no server of the list could be used: {}", join_errors(.0))]
    NoServer(Vec<ClientError>),
}

fn join_errors(errors: &[ClientError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl ClientError {
    /// The server's reason, when it refused (403).
    pub fn refusal(&self) -> Option<&str> {
        match self {
            ClientError::Server(ReplyError::Refused(r)) => Some(r),
            _ => None,
        }
    }

    /// Whether the server (every server of a list) could not be reached at
    /// all.
    pub fn is_unreachable(&self) -> bool {
        match self {
            ClientError::Connect { .. } => true,
            ClientError::NoServer(all) => all.iter().all(ClientError::is_unreachable),
            _ => false,
        }
    }

    /// Whether the server's certificate was refused (every server's, for a
    /// list): retrying will not help.
    pub fn is_untrusted(&self) -> bool {
        match self {
            ClientError::Untrusted { .. } => true,
            ClientError::NoServer(all) => all.iter().all(ClientError::is_untrusted),
            _ => false,
        }
    }
}

/// Result of a client call.
pub type Result<T> = std::result::Result<T, ClientError>;

/// Reconnection settings.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First wait after a failure.
    pub initial: Duration,
    /// Longest wait between attempts.
    pub max: Duration,
    /// Attempts before giving up (for requests; event streams keep trying).
    pub attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_millis(100), max: Duration::from_secs(5), attempts: 5 }
    }
}

impl Backoff {
    /// The wait before attempt `n` (0-based), doubling up to `max`.
    pub fn delay(&self, n: u32) -> Duration {
        self.initial.saturating_mul(1u32 << n.min(16)).min(self.max)
    }
}

/// A client session with a server (or with the nodes of a cluster: see
/// [`Endpoint`]; a request on a connection that was lost goes to the next
/// node that answers).
#[derive(Debug)]
pub struct Client {
    endpoint: Endpoint,
    addr: String,
    conn: Option<Conn>,
    session: Option<SessionInfo>,
    backoff: Backoff,
    timeout: Duration,
    event_silence: Duration,
}

impl Client {
    /// Connects to `addr`: `host:port`, or `tls://host:port` with the
    /// default trust policy ([`TlsOptions::default`]), or a comma-separated
    /// list of them (the first that can be reached is used).
    pub async fn connect(addr: impl Into<String>) -> Result<Client> {
        Client::connect_to(Endpoint::parse(&addr.into())?).await
    }

    /// Connects to an endpoint (an address with its trust policy).
    pub async fn connect_to(endpoint: Endpoint) -> Result<Client> {
        let conn = Conn::open(&endpoint).await?;
        Ok(Client {
            addr: conn.server().to_string(),
            endpoint,
            conn: Some(conn),
            session: None,
            backoff: Backoff::default(),
            timeout: Duration::from_secs(30),
            event_silence: EVENT_SILENCE,
        })
    }

    /// Connects and takes up an existing session (e.g. one saved on disk).
    /// Nothing is checked until the first request.
    pub async fn resume(addr: impl Into<String>, session: SessionInfo) -> Result<Client> {
        Client::resume_at(Endpoint::parse(&addr.into())?, session).await
    }

    /// [`Client::resume`] at an endpoint.
    pub async fn resume_at(endpoint: Endpoint, session: SessionInfo) -> Result<Client> {
        let mut c = Client::connect_to(endpoint).await?;
        c.session = Some(session);
        Ok(c)
    }

    /// Sets the reconnection policy.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets how long a request may wait for its answer (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how long an event stream may hear nothing, not even a `/ping`,
    /// before its connection counts as lost and is replaced (default
    /// [`EVENT_SILENCE`], for the server's ping every 20 s).
    pub fn with_event_silence(mut self, silence: Duration) -> Self {
        self.event_silence = silence;
        self
    }

    /// The address (`host:port` or `tls://host:port`) of the server this
    /// client talks to now: of a list, the one its last connection went to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Every server this client may use, as given (`a:7447,b:7447`): what
    /// to save to connect again.
    pub fn servers(&self) -> String {
        self.endpoint.servers().to_string()
    }

    /// The servers and trust policy.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// How the TLS server was trusted on the current connection (`None` on
    /// plain TCP or while disconnected).
    pub fn trust(&self) -> Option<&Trust> {
        self.conn.as_ref().and_then(Conn::trust)
    }

    /// The current session, if logged in.
    pub fn session(&self) -> Option<&SessionInfo> {
        self.session.as_ref()
    }

    /// My user id, if logged in.
    pub fn user_id(&self) -> Option<UserId> {
        self.session.as_ref().map(|s| s.id)
    }

    fn creds(&self) -> Result<Credentials> {
        let s = self.session.as_ref().ok_or(ClientError::NotLoggedIn)?;
        Ok(Credentials { id: s.id, token: s.token.clone() })
    }

    /// Sends one request and reads its answer, reconnecting first if the
    /// connection had been lost.
    pub async fn request(&mut self, req: &ClientRequest) -> Result<Answer> {
        self.raw(req.to_frame()).await
    }

    /// Sends any request frame (for routes this library does not know).
    pub async fn raw(&mut self, frame: RawRequest) -> Result<Answer> {
        // A connection the server closed while we were idle (a restart, an
        // idle timeout on the way) is replaced before sending, not after.
        // Of a list, the next node is tried first: this one may be gone.
        if self.conn.as_ref().is_none_or(Conn::is_closed) {
            if let Some(old) = self.conn.take() {
                self.endpoint.failed(old.server());
            }
        }
        // The event stream (or another request) moved to another node,
        // having found this one dead or silent: follow it rather than wait
        // for a request to time out here.
        if self.conn.as_ref().is_some_and(|c| c.server() != self.endpoint.current()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let conn = Conn::open_with_backoff(&self.endpoint, self.backoff).await?;
            self.addr = conn.server().to_string();
            self.conn = Some(conn);
        }
        let Some(conn) = self.conn.as_mut() else { return Err(ClientError::Disconnected) };
        let result = match tokio::time::timeout(self.timeout, conn.request(&frame)).await {
            Ok(Ok(answer)) => return Ok(Answer(answer)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClientError::Timeout(self.timeout)),
        };
        // Broken or silent: the next request starts on another node.
        if let Some(old) = self.conn.take() {
            self.endpoint.failed(old.server());
        }
        result
    }

    /// Creates an account and logs in with it.
    pub async fn create(&mut self, email: &str, password: &str, name: Option<&str>) -> Result<SessionInfo> {
        let req = ClientRequest::Create {
            email: email.to_owned(),
            password: Secret::new(password),
            name: name.map(str::to_owned),
        };
        let s: SessionInfo = self.request(&req).await?.json()?;
        self.session = Some(s.clone());
        Ok(s)
    }

    /// Logs in (a new session, next to any others of the same account).
    pub async fn login(&mut self, email: &str, password: &str) -> Result<SessionInfo> {
        let req = ClientRequest::Login { email: email.to_owned(), password: Secret::new(password) };
        let s: SessionInfo = self.request(&req).await?.json()?;
        self.session = Some(s.clone());
        Ok(s)
    }

    /// Ends this session.
    pub async fn logout(&mut self) -> Result<()> {
        let s = self.session.as_ref().ok_or(ClientError::NotLoggedIn)?;
        let req = ClientRequest::Logout(LogoutBy::Email { email: s.email.clone(), token: s.token.clone() });
        self.request(&req).await?.ok()?;
        self.session = None;
        Ok(())
    }

    /// Deletes the account everywhere (the seed's way: the token is enough).
    pub async fn delete_account(&mut self) -> Result<()> {
        let req = ClientRequest::Delete { auth: self.creds()?, password: None };
        self.request(&req).await?.ok()?;
        self.session = None;
        Ok(())
    }

    /// Deletes the account everywhere if `password` is its password (a 403
    /// refusal otherwise).
    pub async fn delete_account_with_password(&mut self, password: &str) -> Result<()> {
        let req = ClientRequest::Delete { auth: self.creds()?, password: Some(Secret::new(password)) };
        self.request(&req).await?.ok()?;
        self.session = None;
        Ok(())
    }

    /// My contacts with presence, and my pending requests.
    pub async fn contacts(&mut self) -> Result<Vec<ContactEntry>> {
        let req = ClientRequest::Contacts(self.creds()?);
        Ok(self.request(&req).await?.json()?)
    }

    /// Asks someone to become a contact.
    pub async fn add_contact(&mut self, email: &str) -> Result<()> {
        let req = ClientRequest::AddContact { auth: self.creds()?, email: email.to_owned() };
        Ok(self.request(&req).await?.ok()?)
    }

    /// Removes a contact (or cancels or drops a request).
    pub async fn remove_contact(&mut self, target: ContactRef) -> Result<()> {
        let req = ClientRequest::RemoveContact { auth: self.creds()?, target };
        Ok(self.request(&req).await?.ok()?)
    }

    /// Requests waiting for my answer.
    pub async fn contact_requests(&mut self) -> Result<Vec<User>> {
        let req = ClientRequest::ContactRequests(self.creds()?);
        Ok(self.request(&req).await?.json()?)
    }

    /// Accepts a request.
    pub async fn accept_contact(&mut self, from: UserId) -> Result<()> {
        let req = ClientRequest::AcceptContact { auth: self.creds()?, contact_id: from };
        Ok(self.request(&req).await?.ok()?)
    }

    /// Declines a request.
    pub async fn decline_contact(&mut self, from: UserId) -> Result<()> {
        let req = ClientRequest::DeclineContact { auth: self.creds()?, contact_id: from };
        Ok(self.request(&req).await?.ok()?)
    }

    /// Calls a contact.
    pub async fn call(&mut self, contact: UserId, media: MediaSetup) -> Result<CallStarted> {
        let req = ClientRequest::Call { auth: self.creds()?, contact_id: contact, media };
        Ok(self.request(&req).await?.json()?)
    }

    /// Accepts a ringing call; answers who is in it and my relay grant.
    pub async fn accept_call(&mut self, call: CallId, media: MediaSetup) -> Result<CallJoined> {
        let req = ClientRequest::Answer { auth: self.creds()?, call_id: call, accept: true, media };
        Ok(self.request(&req).await?.json()?)
    }

    /// Declines a ringing call.
    pub async fn decline_call(&mut self, call: CallId) -> Result<()> {
        let req =
            ClientRequest::Answer { auth: self.creds()?, call_id: call, accept: false, media: MediaSetup::default() };
        Ok(self.request(&req).await?.ok()?)
    }

    /// Reveals the key I committed to in `/call` (after `/call_accepted`).
    pub async fn call_key(&mut self, call: CallId, key: String) -> Result<()> {
        let req = ClientRequest::CallKey { auth: self.creds()?, call_id: call, key };
        Ok(self.request(&req).await?.ok()?)
    }

    /// Answers a newcomer's key commitment with a nonce (group calls).
    pub async fn call_nonce(&mut self, call: CallId, nonce: String) -> Result<()> {
        let req = ClientRequest::CallNonce { auth: self.creds()?, call_id: call, nonce };
        Ok(self.request(&req).await?.ok()?)
    }

    /// Leaves a call (or declines it while it rings).
    pub async fn hangup(&mut self, call: CallId) -> Result<()> {
        let req = ClientRequest::Hangup { auth: self.creds()?, call_id: call };
        Ok(self.request(&req).await?.ok()?)
    }

    /// Rings another contact into a call.
    pub async fn invite(&mut self, call: CallId, contact: UserId) -> Result<()> {
        let req = ClientRequest::Invite { auth: self.creds()?, call_id: call, contact_id: contact };
        Ok(self.request(&req).await?.ok()?)
    }

    /// Opens the push channel on a connection of its own.
    pub async fn events(&self) -> Result<EventStream> {
        EventStream::open(self.endpoint.clone(), self.creds()?, self.backoff, self.event_silence).await
    }

    /// Opens my call channel for a call on a connection of its own (to the
    /// first node of the list that answers).
    pub async fn connect_call(&self, call: CallId) -> Result<CallChannel> {
        let frame = ClientRequest::ConnectCall { auth: self.creds()?, call_id: call }.to_frame();
        self.endpoint
            .first(|mut conn| {
                let frame = frame.clone();
                async move {
                    Answer(conn.request(&frame).await?).ok()?;
                    Ok(CallChannel { conn })
                }
            })
            .await
    }
}

/// My call channel: `/send` frames both ways, `/call_ended` from the server.
#[derive(Debug)]
pub struct CallChannel {
    conn: Conn,
}

impl CallChannel {
    /// Sends packets (all the same size) to the other participants.
    pub async fn send(&mut self, data: &SendData) -> Result<()> {
        let f = ChannelFrame::Send { from: None, data: Bytes::from(data.to_json()) };
        self.conn.write_frame(&f.to_frame()).await
    }

    /// Sends a raw `/send` data section.
    pub async fn send_raw(&mut self, data: Bytes) -> Result<()> {
        self.conn.write_frame(&ChannelFrame::Send { from: None, data }.to_frame()).await
    }

    /// The next frame; `Ok(None)` when the server closed the channel.
    pub async fn recv(&mut self) -> Result<Option<ChannelFrame>> {
        match self.conn.read_request_frame().await? {
            None => Ok(None),
            Some(f) => ChannelFrame::parse(&f).map(Some).map_err(|e| ClientError::Protocol(e.to_string())),
        }
    }

    /// Splits into halves that can be used from two tasks.
    pub fn split(self) -> (channel::Sender, channel::Receiver) {
        let (s, r) = self.conn.split();
        (channel::Sender { w: s }, channel::Receiver { r })
    }
}

/// The two halves of a [`CallChannel`].
pub mod channel {
    use super::*;

    /// Writes `/send` frames.
    #[derive(Debug)]
    pub struct Sender {
        pub(crate) w: conn::WriteHalf,
    }

    impl Sender {
        /// Sends a raw `/send` data section.
        pub async fn send_raw(&mut self, data: Bytes) -> Result<()> {
            self.w.write_frame(&ChannelFrame::Send { from: None, data }.to_frame()).await
        }
    }

    /// Reads relayed frames.
    #[derive(Debug)]
    pub struct Receiver {
        pub(crate) r: conn::ReadHalf,
    }

    impl Receiver {
        /// The next frame; `Ok(None)` when the server closed the channel.
        pub async fn recv(&mut self) -> Result<Option<ChannelFrame>> {
            match self.r.read_request_frame().await? {
                None => Ok(None),
                Some(f) => ChannelFrame::parse(&f).map(Some).map_err(|e| ClientError::Protocol(e.to_string())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_max() {
        let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1), attempts: 3 };
        assert_eq!(b.delay(0), Duration::from_millis(100));
        assert_eq!(b.delay(1), Duration::from_millis(200));
        assert_eq!(b.delay(3), Duration::from_millis(800));
        assert_eq!(b.delay(4), Duration::from_secs(1));
        assert_eq!(b.delay(40), Duration::from_secs(1));
    }
}
