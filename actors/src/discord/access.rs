//! Who may talk to Claude from Discord: the global allowlists (`[access]`) and each channel's
//! own, which replaces them (and `allow_everyone`) for that channel.

use std::sync::Arc;

use serde::Deserialize;

use crate::conversation::ChannelProfile;
use crate::ids::UserId;

/// The Discord-only part of a `[[channel]]`: who may talk in it, and whether they must
/// mention the bot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ChannelAccess {
    /// Only answer messages that mention the bot (the mention is removed from the prompt).
    #[serde(default)]
    pub require_mention: bool,
    /// Users allowed here, replacing `access.allowed_users` for this channel.
    pub allowed_users: Option<Vec<UserId>>,
    /// Roles allowed here, replacing `access.allowed_roles` for this channel.
    pub allowed_roles: Option<Vec<u64>>,
    /// Users who may answer Claude's permission requests here, replacing `access.approvers`.
    pub approvers: Option<Vec<UserId>>,
}

impl ChannelAccess {
    /// Whether the channel has a list of its own.
    fn has_own_list(&self) -> bool {
        self.allowed_users.is_some() || self.allowed_roles.is_some()
    }
}

/// A configured channel as the gateway sees it: the core's profile and who may talk there.
#[derive(Debug, Clone)]
pub struct DiscordChannel {
    /// What the core needs.
    pub profile: Arc<ChannelProfile>,
    /// Who may talk.
    pub access: ChannelAccess,
}

/// The `[access]` settings: who may talk to Claude.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Discord user ids allowed in every channel (unless the channel has its own list).
    #[serde(default)]
    pub allowed_users: Vec<UserId>,
    /// Discord role ids allowed in every channel (unless the channel has its own list).
    #[serde(default)]
    pub allowed_roles: Vec<u64>,
    /// Let everyone in: must be set explicitly when there is no allowlist.
    #[serde(default)]
    pub allow_everyone: bool,
    /// A refused user is told at most once per conversation in this many seconds.
    pub refusal_cooldown_secs: u64,
    /// Users who may answer Claude's permission requests (unless a channel has its own list);
    /// unset: whoever may talk in the conversation.
    #[serde(default)]
    pub approvers: Option<Vec<UserId>>,
}

impl AccessConfig {
    /// Whether any allowlist exists, globally or on a channel.
    pub fn has_allowlist<'a>(&self, channels: impl IntoIterator<Item = &'a ChannelAccess>) -> bool {
        !self.allowed_users.is_empty()
            || !self.allowed_roles.is_empty()
            || channels.into_iter().any(ChannelAccess::has_own_list)
    }

    /// Whether `user` (with `roles`) may use `channel`. A channel's own list replaces the
    /// global one and `allow_everyone` alike.
    pub fn allows(&self, channel: &ChannelAccess, user: UserId, roles: &[u64]) -> bool {
        let (users, role_list) = if channel.has_own_list() {
            (
                channel.allowed_users.as_deref().unwrap_or_default(),
                channel.allowed_roles.as_deref().unwrap_or_default(),
            )
        } else if self.allow_everyone {
            return true;
        } else {
            (self.allowed_users.as_slice(), self.allowed_roles.as_slice())
        };
        users.contains(&user) || roles.iter().any(|r| role_list.contains(r))
    }
}

impl AccessConfig {
    /// Whether `user`'s roles decide if they may talk in `channel` (they are not allowed by
    /// id, and a role list applies): a message without its author's roles cannot be routed.
    pub fn decides_by_roles(&self, channel: &ChannelAccess, user: UserId) -> bool {
        let (users, roles) = if channel.has_own_list() {
            (
                channel.allowed_users.as_deref().unwrap_or_default(),
                channel.allowed_roles.as_deref().unwrap_or_default(),
            )
        } else if self.allow_everyone {
            return false;
        } else {
            (self.allowed_users.as_slice(), self.allowed_roles.as_slice())
        };
        !users.contains(&user) && !roles.is_empty()
    }

    /// Whether `user` (with `roles`) may answer permission requests in `channel`: its own
    /// approvers, else the global ones, else whoever may talk there.
    pub fn approves(&self, channel: &ChannelAccess, user: UserId, roles: &[u64]) -> bool {
        match channel.approvers.as_ref().or(self.approvers.as_ref()) {
            Some(list) => list.contains(&user),
            None => self.allows(channel, user, roles),
        }
    }

    /// Whom a permission prompt in `channel` asked by `asker` mentions: the asker, if they may
    /// answer it, else the approvers (at most ten).
    pub fn prompt_mentions(&self, channel: &ChannelAccess, asker: UserId) -> Vec<UserId> {
        match channel.approvers.as_ref().or(self.approvers.as_ref()) {
            Some(list) if !list.contains(&asker) => list.iter().take(10).copied().collect(),
            // No person asked (a prompt over HTTP) and anyone may answer: no one in particular.
            _ if !asker.is_person() => Vec::new(),
            _ => vec![asker],
        }
    }

    /// How long a refused user is not told again.
    pub fn refusal_cooldown(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.refusal_cooldown_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(users: Option<Vec<u64>>, roles: Option<Vec<u64>>) -> ChannelAccess {
        ChannelAccess {
            require_mention: false,
            allowed_users: users.map(|u| u.into_iter().map(UserId).collect()),
            allowed_roles: roles,
            approvers: None,
        }
    }

    #[test]
    fn access_uses_global_lists_unless_the_channel_has_its_own() {
        let access = AccessConfig {
            allowed_users: vec![UserId(10)],
            allowed_roles: vec![20],
            allow_everyone: false,
            refusal_cooldown_secs: 60,
            approvers: None,
        };
        let open = profile(None, None);
        assert!(access.allows(&open, UserId(10), &[]));
        assert!(access.allows(&open, UserId(99), &[20]));
        assert!(!access.allows(&open, UserId(99), &[21]));
        let own = profile(Some(vec![11]), None);
        assert!(access.allows(&own, UserId(11), &[]));
        assert!(
            !access.allows(&own, UserId(10), &[20]),
            "channel list replaces the global one"
        );
        let everyone = AccessConfig {
            allow_everyone: true,
            ..AccessConfig::default()
        };
        assert!(everyone.allows(&open, UserId(12345), &[]));
        assert!(
            !everyone.allows(&own, UserId(12345), &[]),
            "a channel's own list wins over allow_everyone"
        );
        assert!(everyone.allows(&own, UserId(11), &[]));
        assert!(
            access.decides_by_roles(&open, UserId(99)),
            "a stranger, and a role list"
        );
        assert!(!access.decides_by_roles(&open, UserId(10)), "allowed by id");
        assert!(
            !access.decides_by_roles(&own, UserId(99)),
            "the channel's own list has no roles"
        );
        assert!(!everyone.decides_by_roles(&open, UserId(99)));
    }

    #[test]
    fn an_allowlist_anywhere_counts() {
        let none = AccessConfig::default();
        assert!(!none.has_allowlist(&[profile(None, None)]));
        assert!(none.has_allowlist(&[profile(None, Some(vec![]))]));
    }
}
