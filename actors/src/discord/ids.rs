//! The Discord edge of the core's ids: serenity's id types in, the core's out, and back. A
//! snowflake is never 0; the core's default ids (0: "none", as a console or a notice about a
//! thread uses) become 1 on the way out, which names nothing.

use serenity::all as s;

use crate::ids::{ChannelId, MessageId, UserId};

/// The core's channel id of serenity's.
pub fn channel(id: s::ChannelId) -> ChannelId {
    ChannelId(id.get())
}

/// The core's message id of serenity's.
pub fn message(id: s::MessageId) -> MessageId {
    MessageId(id.get())
}

/// The core's user id of serenity's.
pub fn user(id: s::UserId) -> UserId {
    UserId(id.get())
}

/// Serenity's channel id of the core's.
pub fn to_channel(id: ChannelId) -> s::ChannelId {
    s::ChannelId::new(id.get().max(1))
}

/// Serenity's message id of the core's.
pub fn to_message(id: MessageId) -> s::MessageId {
    s::MessageId::new(id.get().max(1))
}

/// Serenity's user id of the core's.
pub fn to_user(id: UserId) -> s::UserId {
    s::UserId::new(id.get().max(1))
}

/// The roles a member has, as the access rules read them.
pub fn roles(roles: &[s::RoleId]) -> Vec<u64> {
    roles.iter().map(|r| r.get()).collect()
}

/// The roles of an interaction's member (none outside a guild).
pub fn member_roles(member: Option<&s::Member>) -> Vec<u64> {
    member.map(|m| roles(&m.roles)).unwrap_or_default()
}
