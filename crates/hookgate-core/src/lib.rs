//! The vocabulary of hookgate: events, their ids and states, key templates,
//! secrets and the retry policy. This crate knows nothing of HTTP servers,
//! databases or async runtimes, and does no I/O, so every rule here is
//! testable with plain function calls. The one exception is
//! [`EventId::generate`], which reads the system clock and random source to
//! make a UUIDv7.

mod backoff;
pub mod filter;
pub mod headers;
mod id;
mod key;
mod secret;
mod state;
pub mod template;
pub mod urlencoded;

pub use backoff::{RetryPolicy, human_duration};
pub use filter::{Filter, FilterError, Glob};
pub use headers::{Headers, NotText};
pub use id::{DeliveryId, EventId, ParseDeliveryIdError, ParseEventIdError};
pub use key::Key;
pub use secret::Secret;
pub use state::{EventState, ParseEventStateError, ParseStateError, State};
pub use template::{Missing, RequestView, Template, TemplateError};
