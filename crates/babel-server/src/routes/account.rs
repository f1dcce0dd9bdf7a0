//! Account and privacy routes (DESIGN.md §5): `/rename`, `/change_password`,
//! `/sessions`, `/end_session`, `/set_status`, `/block`, `/unblock`,
//! `/blocked`.

use babel_proto::{AccountRequest, Reply};

use crate::app::{App, Authed, ConnState, ServiceError, ServiceResult};

impl App {
    /// Answers an authenticated account request.
    pub(crate) async fn account(
        &self,
        _conn: &mut ConnState,
        _me: Authed,
        request: AccountRequest,
    ) -> ServiceResult<Reply> {
        Err(ServiceError::Refused(format!("{} is not available on this server yet", request.route().as_str())))
    }
}
