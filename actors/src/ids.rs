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

id! {
    /// A schedule (`/claude schedule`): its row in the store.
    ScheduleId
}

/// The bit that marks a message id as the service's own: a prompt that did not come from a
/// Discord message (a schedule's run, a prompt over HTTP). Discord's snowflakes stay far below
/// it (they would need a timestamp past the year 2084), and as SQLite integers such ids are
/// negative, so nothing that looks for the newest Discord message in the inbox sees them.
const LOCAL: u64 = 1 << 63;

impl MessageId {
    /// The service's own message number `n` (see [`MessageId::is_local`]).
    pub const fn local(n: u64) -> Self {
        Self(LOCAL | n)
    }

    /// Whether this id is the service's own, not a Discord message that could be replied to.
    pub const fn is_local(self) -> bool {
        self.0 & LOCAL != 0
    }
}

impl UserId {
    /// No person: a prompt over HTTP, whose author is a name, not a Discord user.
    pub const NOBODY: Self = Self(0);

    /// Whether this is a person who can be mentioned.
    pub const fn is_person(self) -> bool {
        self.0 != 0
    }
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
