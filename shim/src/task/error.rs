//! Task errors and their one mapping onto ttrpc status codes (which containerd maps onto errdefs).

use containerd_shim::protos::ttrpc::{self, Code};

/// Why a task request failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// No such task (containerd treats the task as gone).
    #[error("{0}")]
    NotFound(String),
    /// A task with that id exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request cannot be served as given.
    #[error("{0}")]
    InvalidArgument(String),
    /// The task is not in a state that allows the request.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The request asks for something WebAssembly components do not have.
    #[error("{0}")]
    Unimplemented(String),
    /// The host failed (mounts, files); the message says what.
    #[error("{0}")]
    Internal(String),
}

impl From<TaskError> for ttrpc::Error {
    fn from(e: TaskError) -> Self {
        let code = match &e {
            TaskError::NotFound(_) => Code::NOT_FOUND,
            TaskError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            TaskError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            TaskError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            TaskError::Unimplemented(_) => Code::UNIMPLEMENTED,
            TaskError::Internal(_) => Code::INTERNAL,
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.to_string()))
    }
}
