//! The push channel as a stream that reconnects by itself: to the same
//! server, or of a list of servers (a cluster's nodes) to the next one
//! that answers, so a node that dies (a close, or [`EVENT_SILENCE`]
//! without even a `/ping` when its machine vanished) costs one
//! [`Event::Disconnected`] / [`Event::Reconnected`] pair.

use std::pin::Pin;
use std::task::{Context, Poll};

use std::time::Duration;

use babel_proto::{Answer, ClientRequest, Credentials, ReplyError, ServerEvent};
use tokio::sync::{mpsc, watch};

use crate::conn::{Conn, Endpoint};
use crate::tls::ServerAddr;
use crate::{Backoff, ClientError, Result};

/// What the event stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An event from the server (`/ping` is consumed, not yielded).
    Server(ServerEvent),
    /// The connection was lost (the server closed it or went away); the
    /// stream is reconnecting, and says [`Event::Reconnected`] when it is
    /// back. Sent once per loss, at once, so a program can say so.
    Disconnected,
    /// The connection was lost and is back: events may have been missed,
    /// so re-read whatever state is shown (contacts, calls).
    Reconnected,
}

/// How long an event connection may stay silent before it counts as lost:
/// the server sends `/ping` every 20 s, so 25 s of nothing means it (or
/// the way to it) is gone even though no close arrived.
pub const EVENT_SILENCE: Duration = Duration::from_secs(25);

/// The `/events` channel. Dropping it closes the connection.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<Result<Event>>,
    up: watch::Receiver<bool>,
    node: watch::Receiver<Option<ServerAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Subscribes on the first node of the list that answers.
async fn subscribe(endpoint: &Endpoint, creds: &Credentials) -> Result<Conn> {
    let frame = ClientRequest::Events(creds.clone()).to_frame();
    endpoint
        .first(|mut conn| {
            let frame = frame.clone();
            async move {
                Answer(conn.request(&frame).await?).ok()?;
                Ok(conn)
            }
        })
        .await
}

impl EventStream {
    /// Subscribes, failing if the first attempt fails; later losses (a
    /// close, or `silence` without even a `/ping`) are retried with backoff
    /// until the session is refused (401) or the server's certificate is,
    /// which ends the stream with that error. Of a list of servers, each
    /// subscription goes to the first that answers, starting after the
    /// node just lost.
    pub(crate) async fn open(
        addr: Endpoint,
        creds: Credentials,
        backoff: Backoff,
        silence: Duration,
    ) -> Result<EventStream> {
        let first = subscribe(&addr, &creds).await?;
        let (tx, rx) = mpsc::channel(256);
        let (up_tx, up) = watch::channel(true);
        let (node_tx, node) = watch::channel(Some(first.server().clone()));
        let task = tokio::spawn(async move {
            let mut conn = Some(first);
            let mut attempt = 0u32;
            loop {
                let mut c = match conn.take() {
                    Some(c) => c,
                    None => match subscribe(&addr, &creds).await {
                        Ok(c) => {
                            attempt = 0;
                            tracing::debug!(server = %c.server(), "event stream back");
                            node_tx.send_replace(Some(c.server().clone()));
                            up_tx.send_replace(true);
                            if tx.send(Ok(Event::Reconnected)).await.is_err() {
                                return;
                            }
                            c
                        }
                        // Refused for good: a dead session, or a server
                        // certificate that is no longer trusted.
                        Err(e) if matches!(e, ClientError::Server(ReplyError::Unauthorized)) || e.is_untrusted() => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, attempt, "event stream reconnecting");
                            tokio::time::sleep(backoff.delay(attempt)).await;
                            attempt = attempt.saturating_add(1);
                            continue;
                        }
                    },
                };
                while let Ok(Ok(Some(frame))) = tokio::time::timeout(silence, c.read_request_frame()).await {
                    match ServerEvent::parse(&frame) {
                        Ok(ServerEvent::Ping) => {}
                        Ok(ev) => {
                            if tx.send(Ok(Event::Server(ev))).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "unreadable event skipped"),
                    }
                }
                // Closed, broken or silent: lost until a new subscription,
                // which starts with the next node.
                addr.failed(c.server());
                node_tx.send_replace(None);
                up_tx.send_replace(false);
                if tx.send(Ok(Event::Disconnected)).await.is_err() {
                    return;
                }
            }
        });
        Ok(EventStream { rx, up, node, task })
    }

    /// Whether the stream's connection is up now (`false` from the moment
    /// it was lost until it is back, which [`Event::Disconnected`] and
    /// [`Event::Reconnected`] also say in the stream's order);
    /// `changed()` on it wakes on every loss and return.
    pub fn connection(&self) -> watch::Receiver<bool> {
        self.up.clone()
    }

    /// The server the stream is subscribed on now (`None` while it is
    /// lost); `changed()` on it wakes when it moves.
    pub fn server(&self) -> watch::Receiver<Option<ServerAddr>> {
        self.node.clone()
    }

    /// The next event; `None` once the stream has ended for good.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        self.rx.recv().await
    }

    /// The next server event, skipping reconnection notices.
    pub async fn next_server_event(&mut self) -> Option<Result<ServerEvent>> {
        loop {
            match self.next().await? {
                Ok(Event::Server(e)) => return Some(Ok(e)),
                Ok(Event::Reconnected | Event::Disconnected) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl futures_core::Stream for EventStream {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
