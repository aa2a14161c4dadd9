//! The ids the core deals in, one type per kind, so a message id can never be passed where a
//! conversation is meant. They are Discord's snowflakes (the console numbers its own), converted
//! from serenity's types at the Discord edge and stored as SQLite integers (the same 64 bits).

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The number.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<u64> for $name {
            fn from(id: u64) -> Self {
                Self(id)
            }
        }
    };
}

id! {
    /// A conversation: a configured channel, or a thread under one (its id is the channel's or
    /// the thread's).
    ConversationId
}

id! {
    /// A Discord channel or thread: where a message was posted, where a reply goes, or a
    /// configured channel.
    ChannelId
}

id! {
    /// A message (a Discord message, or a console line).
    MessageId
}

id! {
    /// An invocation of a coordinator command: a Discord interaction (`/claude`), whose
    /// deferred response its answer edits.
    CommandId
}

id! {
    /// A person.
    UserId
}

impl From<ChannelId> for ConversationId {
    /// The conversation of a channel or thread itself.
    fn from(id: ChannelId) -> Self {
        Self(id.0)
    }
}

impl From<ConversationId> for ChannelId {
    /// Where a conversation's messages are posted: its channel or thread.
    fn from(id: ConversationId) -> Self {
        Self(id.0)
    }
}
