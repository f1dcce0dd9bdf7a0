//! `/send_message`, `/messages`, `/mark_read`, `/unread`, `/call_history`.

use babel_proto::{ClientRequest, Reply};

use crate::app::{App, ConnState, ServiceResult};

impl App {
    /// The message and call-history routes (not served yet: answered as an
    /// unknown route).
    pub(crate) async fn messaging(&self, _conn: &mut ConnState, _req: ClientRequest) -> ServiceResult<Reply> {
        Ok(Reply::NotFound)
    }
}
