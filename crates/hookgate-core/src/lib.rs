//! The vocabulary of hookgate: events, their ids and states, key templates and
//! the retry policy. Pure: this crate knows nothing of HTTP servers, databases
//! or async runtimes, so every rule here is testable with plain function calls.

mod backoff;
mod id;
mod state;
pub mod template;

pub use backoff::RetryPolicy;
pub use id::{EventId, ParseEventIdError};
pub use state::{ParseStateError, State};
pub use template::{Missing, RequestView, Template, TemplateError};
