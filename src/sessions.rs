//! `claude-coordinator sessions list | show | reset` and `audit`: read and reset the stored
//! sessions, and list the permission decisions, through the same store actor as the service.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use actix::Addr;
use actors::store::{
    Conversation, FindConversation, ListApprovals, ListConversations, ListUndelivered,
    LoadConversation, Outgoing, ResetConversation, SessionStoreActor, StoreError,
};
use anyhow::{bail, Context as _};

use crate::cli::SessionsCommand;

/// Runs one `sessions` subcommand, printing to stdout.
pub async fn execute(
    store: &Addr<SessionStoreActor>,
    action: SessionsCommand,
) -> anyhow::Result<()> {
    match action {
        SessionsCommand::List { json } => {
            let all = store
                .send(ListConversations)
                .await
                .map_err(StoreError::from)??;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                print!("{}", table(&all));
            }
        }
        SessionsCommand::Show { name, json } => {
            let c = find(store, &name).await?;
            let undelivered = store
                .send(ListUndelivered {
                    conversation_id: Some(c.id),
                })
                .await
                .map_err(StoreError::from)??;
            if json {
                let mut value = serde_json::to_value(&c)?;
                value["undelivered"] = serde_json::to_value(&undelivered)?;
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", details(&c));
                print!("{}", undelivered_text(&undelivered));
            }
        }
        SessionsCommand::Reset { name } => {
            let c = find(store, &name).await?;
            store
                .send(ResetConversation { id: c.id })
                .await
                .map_err(StoreError::from)?
                .context("resetting the session")?;
            println!(
                "{}: session forgotten; the next message starts a new Claude session.",
                c.name
            );
        }
    }
    Ok(())
}

/// `audit [--conversation NAME] [--json]`: every permission decision, newest first.
pub async fn audit(
    store: &Addr<SessionStoreActor>,
    conversation: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let id = match conversation {
        Some(name) => Some(find(store, name).await?.id),
        None => None,
    };
    let all = store
        .send(ListApprovals {
            conversation_id: id,
        })
        .await
        .map_err(StoreError::from)??;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let mut out = format!(
        "{:<20}  {:<24} {:<10} {:<15} {:<20} {}\n",
        "WHEN", "CONVERSATION", "TOOL", "DECISION", "BY", "WHAT (RULE)"
    );
    for a in &all {
        let what = a.summary.lines().next().unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<20}  {:<24} {:<10} {:<15} {:<20} {}{}",
            time(a.at_ms),
            a.conversation,
            a.tool,
            a.decision,
            a.decided_by.as_deref().unwrap_or("-"),
            what,
            a.rule
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
        );
    }
    print!("{out}");
    Ok(())
}

/// Finds a conversation by name, or by id when `name` is a number.
async fn find(store: &Addr<SessionStoreActor>, name: &str) -> anyhow::Result<Conversation> {
    let by_name = store
        .send(FindConversation {
            name: name.to_string(),
        })
        .await
        .map_err(StoreError::from)??;
    if let Some(c) = by_name {
        return Ok(c);
    }
    if let Ok(id) = name.parse::<u64>() {
        if let Some(c) = store
            .send(LoadConversation { id: id.into() })
            .await
            .map_err(StoreError::from)??
        {
            return Ok(c);
        }
    }
    bail!("no stored conversation named `{name}` (see `claude-coordinator sessions list`)")
}

fn time(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn table(all: &[Conversation]) -> String {
    let mut out = format!(
        "{:<24} {:<20} {:<36} {:>8} {:>10}  {:<20}  {}\n",
        "NAME", "ID", "SESSION", "MESSAGES", "COST USD", "UPDATED", "LAST ERROR"
    );
    for c in all {
        let _ = writeln!(
            out,
            "{:<24} {:<20} {:<36} {:>8} {:>10.4}  {:<20}  {}",
            c.name,
            c.id,
            c.session_id.as_deref().unwrap_or("-"),
            c.message_count,
            c.total_cost_usd,
            time(c.updated_at_ms),
            c.last_error.as_deref().unwrap_or("-"),
        );
    }
    out
}

/// The replies still in the outbox: retried at the next start of the service.
fn undelivered_text(rows: &[Outgoing]) -> String {
    let mut out = format!("undelivered:   {}\n", rows.len());
    for r in rows {
        let first = r.text.lines().next().unwrap_or_default();
        let _ = writeln!(
            out,
            "  reply to message {} ({}, {} part(s) posted{}): {}",
            r.message_id,
            r.state.as_str(),
            r.parts_sent,
            r.error
                .as_deref()
                .map(|e| format!(", {e}"))
                .unwrap_or_default(),
            actors::text::truncate_chars(first, 80)
        );
    }
    out
}

fn details(c: &Conversation) -> String {
    format!(
        "name:          {}\nid:            {}\nsession:       {}\nproject dir:   {}\nmodel:         {}\n\
         messages:      {}\ncost (USD):    {:.4} total, {:.4} this session\ncreated:       {}\n\
         updated:       {}\nlast error:    {}\n",
        c.name,
        c.id,
        c.session_id.as_deref().unwrap_or("-"),
        c.project_dir,
        c.model.as_deref().unwrap_or("-"),
        c.message_count,
        c.total_cost_usd,
        c.session_cost_usd,
        time(c.created_at_ms),
        time(c.updated_at_ms),
        c.last_error.as_deref().unwrap_or("-"),
    )
}
