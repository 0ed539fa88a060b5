//! Typed identifiers. All are time-ordered UUIDv7, so sorting by id sorts by creation time.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

typed_id!(
    /// Identifies a task.
    TaskId
);
typed_id!(
    /// Identifies a user.
    UserId
);
typed_id!(
    /// Identifies an API token (not the secret itself).
    TokenId
);

impl TaskId {
    /// The last eight hex digits: unique enough for a branch name such as `berth/1a2b3c4d`.
    pub fn short(&self) -> String {
        let simple = self.0.simple().to_string();
        simple[simple.len() - 8..].to_string()
    }
}

typed_id!(
    /// Identifies a webhook endpoint a user registered.
    WebhookId
);

typed_id!(
    /// Identifies a device's Web Push subscription.
    PushSubscriptionId
);
