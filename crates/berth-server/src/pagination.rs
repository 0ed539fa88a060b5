//! Pages of the task list and of a task's event log: how many a page holds, and the opaque
//! cursor a client sends back for the next page of tasks.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use berth_proto::TaskId;

use crate::error::{ApiError, ApiResult};

/// Tasks per page of `GET /v1/tasks`, unless the client asks otherwise.
pub(crate) const DEFAULT_PAGE: i64 = 50;
pub(crate) const MAX_PAGE: i64 = 200;
/// Events per page of `GET /v1/tasks/{id}/events`, unless the client asks otherwise.
pub(crate) const DEFAULT_EVENT_PAGE: i64 = 500;
pub(crate) const MAX_EVENT_PAGE: i64 = 1000;

/// The page size a client asked for, within `1..=max`, or `default` when it asked none.
pub(crate) fn page_size(asked: Option<i64>, default: i64, max: i64) -> ApiResult<i64> {
    match asked {
        None => Ok(default),
        Some(limit) if (1..=max).contains(&limit) => Ok(limit),
        Some(_) => Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {max}"),
        )),
    }
}

/// A list of tasks resumes after the last task of the previous page: its id, opaque to clients.
pub(crate) fn encode_cursor(id: TaskId) -> String {
    URL_SAFE_NO_PAD.encode(id.0.as_bytes())
}

pub(crate) fn decode_cursor(cursor: &str) -> ApiResult<TaskId> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| uuid::Uuid::from_slice(&bytes).ok())
        .map(TaskId)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_cursor",
                "cursor is not one this server gave out; start again without it",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_and_stays_within_its_bounds() {
        assert_eq!(
            page_size(None, DEFAULT_PAGE, MAX_PAGE).unwrap(),
            DEFAULT_PAGE
        );
        assert_eq!(page_size(Some(1), DEFAULT_PAGE, MAX_PAGE).unwrap(), 1);
        assert_eq!(
            page_size(Some(MAX_PAGE), DEFAULT_PAGE, MAX_PAGE).unwrap(),
            MAX_PAGE
        );
        for refused in [0, -1, MAX_PAGE + 1] {
            let err = page_size(Some(refused), DEFAULT_PAGE, MAX_PAGE).unwrap_err();
            assert_eq!(err.code(), "invalid_limit");
        }
    }

    #[test]
    fn a_cursor_decodes_to_the_task_it_was_made_from() {
        let id = TaskId(uuid::Uuid::now_v7());
        let cursor = encode_cursor(id);
        assert!(cursor
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(decode_cursor(&cursor).unwrap(), id);
    }

    #[test]
    fn a_cursor_not_made_here_is_refused() {
        let too_short = URL_SAFE_NO_PAD.encode([7u8; 15]);
        for cursor in ["", "not base64!", too_short.as_str()] {
            let err = decode_cursor(cursor).unwrap_err();
            assert_eq!(err.code(), "invalid_cursor");
        }
    }
}
