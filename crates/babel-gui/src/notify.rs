//! Desktop notifications: `org.freedesktop.Notifications` on the session
//! D-Bus (pure Rust, through `zbus`), as every Linux desktop offers. Where
//! there is none (no session bus, no notification service, another
//! system), nothing happens: a notification is a courtesy, never an error
//! shown to the person.

use std::time::Duration;

/// How long a notification may take to be handed over.
const SEND_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a notification was not shown (logged at debug level only).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// No session bus, or no notification service on it.
    #[cfg(target_os = "linux")]
    #[error("no desktop notifications: {0}")]
    Bus(#[from] zbus::Error),
    /// The service did not answer in time.
    #[error("the notification service did not answer in time")]
    Timeout,
    /// Not a system with desktop notifications of this kind.
    #[error("desktop notifications are not supported here")]
    Unsupported,
}

/// Tells the desktop that `caller` is calling; silent when it cannot.
/// Answers the notification's id, to [`close`] it once the call stops
/// ringing.
pub async fn incoming_call(caller: String, email: String) -> Option<u32> {
    let body = if email.is_empty() { "Babel: incoming call".to_owned() } else { format!("{email} · Babel") };
    match send(None, &format!("{caller} is calling"), &body).await {
        Ok(id) => {
            tracing::debug!(id, "desktop notified of the call");
            Some(id)
        }
        Err(e) => {
            tracing::debug!(error = %e, "no desktop notification");
            None
        }
    }
}

/// Tells the desktop that a message came from `from` (the window has no
/// focus); silent when it cannot.
pub async fn message(from: String, text: String) {
    // A notification shows the start of a long message.
    let body: String = text.chars().take(200).collect();
    if let Err(e) = send_with(None, &format!("Message from {from}"), &body, "im.received", 1).await {
        tracing::debug!(error = %e, "no desktop notification");
    }
}

/// Takes a notification away (the call was answered, declined or missed).
pub async fn close(id: u32) {
    if let Err(e) = tokio::time::timeout(SEND_TIMEOUT, close_now(id)).await.unwrap_or(Err(NotifyError::Timeout)) {
        tracing::debug!(error = %e, "notification not closed");
    }
}

#[cfg(target_os = "linux")]
async fn close_now(id: u32) -> Result<(), NotifyError> {
    let conn = zbus::connection::Builder::session()?.build().await?;
    conn.call_method(
        Some("org.freedesktop.Notifications"),
        "/org/freedesktop/Notifications",
        Some("org.freedesktop.Notifications"),
        "CloseNotification",
        &(id,),
    )
    .await?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
async fn close_now(_id: u32) -> Result<(), NotifyError> {
    Err(NotifyError::Unsupported)
}

/// Sends one notification on the session bus, or on the bus at `address`
/// (a D-Bus address such as `unix:path=/run/…`); answers its id.
pub async fn send(address: Option<&str>, summary: &str, body: &str) -> Result<u32, NotifyError> {
    send_with(address, summary, body, "call.incoming", 2).await
}

/// [`send`] with a category and an urgency (0 low, 1 normal, 2 critical).
async fn send_with(
    address: Option<&str>,
    summary: &str,
    body: &str,
    category: &str,
    urgency: u8,
) -> Result<u32, NotifyError> {
    match tokio::time::timeout(SEND_TIMEOUT, send_now(address, summary, body, category, urgency)).await {
        Ok(r) => r,
        Err(_) => Err(NotifyError::Timeout),
    }
}

#[cfg(target_os = "linux")]
async fn send_now(
    address: Option<&str>,
    summary: &str,
    body: &str,
    category: &str,
    urgency: u8,
) -> Result<u32, NotifyError> {
    use std::collections::HashMap;
    use zbus::zvariant::Value;

    let builder = match address {
        Some(a) => zbus::connection::Builder::address(a)?,
        None => zbus::connection::Builder::session()?,
    };
    let conn = builder.build().await?;
    // Urgency critical (2, calls): stays until dismissed on most desktops.
    let hints: HashMap<&str, Value<'_>> =
        HashMap::from([("urgency", Value::U8(urgency)), ("category", Value::from(category))]);
    let actions: Vec<&str> = Vec::new();
    let reply = conn
        .call_method(
            Some("org.freedesktop.Notifications"),
            "/org/freedesktop/Notifications",
            Some("org.freedesktop.Notifications"),
            "Notify",
            &("Babel", 0u32, "call-start", summary, body, actions, hints, 30_000i32),
        )
        .await?;
    Ok(reply.body().deserialize::<u32>()?)
}

#[cfg(not(target_os = "linux"))]
async fn send_now(
    _address: Option<&str>,
    _summary: &str,
    _body: &str,
    _category: &str,
    _urgency: u8,
) -> Result<u32, NotifyError> {
    Err(NotifyError::Unsupported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_notification_service_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let address = format!("unix:path={}", dir.path().join("no-bus").display());
        let r = send(Some(&address), "Ben is calling", "ben@x.org").await;
        assert!(matches!(r, Err(NotifyError::Bus(_))), "{r:?}");
    }
}
