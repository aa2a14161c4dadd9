//! Schedules (`/claude schedule`) as the store keeps them, and their runs: a run is written to
//! the inbox in ONE transaction with the schedule's progress (`checked_to_ms`), so a run is
//! neither lost nor doubled by a `kill -9` at any point — once its row is in, the inbox's
//! recovery answers it; once the schedule has moved past a time, that time never runs again.

use actix::{Handler, Message};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::inbox::{insert, next_local_id, state_of};
use super::{from_sql_id, to_sql_id, Inbound, InboxState, SessionStoreActor, StoreError};
use crate::ids::{ChannelId, ConversationId, MessageId, ScheduleId, UserId};
use crate::via::Via;

/// A schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Its number.
    pub id: ScheduleId,
    /// The conversation it runs in.
    pub conversation_id: ConversationId,
    /// The configured channel whose settings apply.
    pub profile_id: ChannelId,
    /// The conversation's name.
    pub conversation: String,
    /// Where its answers go.
    pub channel_id: ChannelId,
    /// The cron expression, as given.
    pub cron: String,
    /// What it asks Claude.
    pub prompt: String,
    /// Who made it.
    pub created_by: UserId,
    /// When (unix ms).
    pub created_at_ms: i64,
    /// Paused: it does not run.
    pub paused: bool,
    /// Every run due at or before this time was handled (run or skipped).
    pub checked_to_ms: i64,
    /// Runs queued so far.
    pub runs: u64,
    /// Runs skipped (missed while the service was down, or due while the previous run still
    /// waited).
    pub skipped: u64,
}

/// Where a new schedule runs.
#[derive(Debug, Clone)]
pub struct ScheduleTarget {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Its configured channel.
    pub profile_id: ChannelId,
    /// Its name.
    pub conversation: String,
    /// Where answers go.
    pub channel_id: ChannelId,
}

/// Add a schedule (its expression already checked); answers its id.
#[derive(Debug, Message)]
#[rtype(result = "Result<ScheduleId, StoreError>")]
pub struct AddSchedule {
    /// Where it runs.
    pub target: ScheduleTarget,
    /// The cron expression.
    pub cron: String,
    /// The prompt.
    pub prompt: String,
    /// Who made it.
    pub by: UserId,
    /// Now (the scheduler's clock, unix ms): it runs from the next time due after this.
    pub now_ms: i64,
}

/// Every schedule (of one conversation, or all).
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Schedule>, StoreError>")]
pub struct ListSchedules {
    /// Only this conversation's.
    pub conversation_id: Option<ConversationId>,
}

/// Remove, pause or resume schedule `id` of a conversation; answers the schedule as it is
/// now (`None`: no such schedule there).
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<Schedule>, StoreError>")]
pub struct ChangeSchedule {
    /// Which.
    pub id: ScheduleId,
    /// Its conversation (a schedule is changed only from where it runs).
    pub conversation_id: ConversationId,
    /// What to do.
    pub change: ScheduleChange,
    /// Now (the scheduler's clock): a resumed schedule runs from the next time due after this.
    pub now_ms: i64,
}

/// What [`ChangeSchedule`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleChange {
    /// Delete it.
    Remove,
    /// Stop its runs.
    Pause,
    /// Run it again (from now on: what fell due while paused is not run).
    Resume,
}

/// A schedule's time `due_ms` has come: queue its run (unless its previous run still waits),
/// and count `missed` earlier times skipped. Everything due up to `checked_to_ms` is then
/// handled.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<Fired>, StoreError>")]
pub struct FireSchedule {
    /// Which.
    pub id: ScheduleId,
    /// Run it (else only skip: every time up to `checked_to_ms` is counted in `missed`).
    pub run: bool,
    /// Times skipped (missed while the service was down).
    pub missed: u64,
    /// The schedule is handled up to here (unix ms).
    pub checked_to_ms: i64,
    /// The run is late (caught up at start).
    pub late: bool,
}

/// What [`FireSchedule`] did (`None` from the store: the schedule is gone or paused).
#[derive(Debug, Clone)]
pub struct Fired {
    /// The schedule, after it.
    pub schedule: Schedule,
    /// The run now in the inbox, to submit.
    pub queued: Option<Inbound>,
    /// Its previous run was still queued or running: this one was skipped.
    pub still_waiting: bool,
    /// An id of the service's own for a notice about the skipped times.
    pub notice_id: MessageId,
}

const COLUMNS: &str = "id, conversation_id, profile_id, conversation, channel_id, cron, prompt, \
     created_by, created_at_ms, paused, checked_to_ms, runs, skipped";

fn row_to_schedule(r: &Row<'_>) -> rusqlite::Result<Schedule> {
    Ok(Schedule {
        id: from_sql_id(r.get(0)?),
        conversation_id: from_sql_id(r.get(1)?),
        profile_id: from_sql_id(r.get(2)?),
        conversation: r.get(3)?,
        channel_id: from_sql_id(r.get(4)?),
        cron: r.get(5)?,
        prompt: r.get(6)?,
        created_by: from_sql_id(r.get(7)?),
        created_at_ms: r.get(8)?,
        paused: r.get(9)?,
        checked_to_ms: r.get(10)?,
        runs: u64::try_from(r.get::<_, i64>(11)?).unwrap_or(0),
        skipped: u64::try_from(r.get::<_, i64>(12)?).unwrap_or(0),
    })
}

fn load(conn: &Connection, id: ScheduleId) -> rusqlite::Result<Option<Schedule>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM schedules WHERE id = ?1"))?
        .query_row([to_sql_id(id)], row_to_schedule)
        .optional()
}

impl Handler<AddSchedule> for SessionStoreActor {
    type Result = Result<ScheduleId, StoreError>;

    fn handle(&mut self, msg: AddSchedule, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            let conn = s.conn()?;
            let t = &msg.target;
            conn.prepare_cached(
                "INSERT INTO schedules (conversation_id, profile_id, conversation, channel_id, cron, \
                 prompt, created_by, created_at_ms, checked_to_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    to_sql_id(t.conversation_id),
                    to_sql_id(t.profile_id),
                    t.conversation,
                    to_sql_id(t.channel_id),
                    msg.cron,
                    msg.prompt,
                    to_sql_id(msg.by),
                    msg.now_ms,
                ])
            })
            .map(|_| from_sql_id(conn.last_insert_rowid()))
            .map_err(StoreError::database)
        })
    }
}

impl Handler<ListSchedules> for SessionStoreActor {
    type Result = Result<Vec<Schedule>, StoreError>;

    fn handle(&mut self, msg: ListSchedules, _: &mut Self::Context) -> Self::Result {
        self.timed(|s| {
            let conn = s.conn()?;
            let mut st = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM schedules WHERE ?1 IS NULL OR conversation_id = ?1 ORDER BY id"
                ))
                .map_err(StoreError::database)?;
            let rows = st
                .query_map([msg.conversation_id.map(to_sql_id)], row_to_schedule)
                .map_err(StoreError::database)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(StoreError::database)
        })
    }
}

impl Handler<ChangeSchedule> for SessionStoreActor {
    type Result = Result<Option<Schedule>, StoreError>;

    fn handle(&mut self, msg: ChangeSchedule, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            let conn = s.conn()?;
            let change = || -> rusqlite::Result<Option<Schedule>> {
                let Some(found) = load(&conn, msg.id)?
                    .filter(|f| f.conversation_id == msg.conversation_id)
                else {
                    return Ok(None);
                };
                let id = to_sql_id(msg.id);
                match msg.change {
                    ScheduleChange::Remove => {
                        conn.execute("DELETE FROM schedules WHERE id = ?1", [id])?;
                        return Ok(Some(found));
                    }
                    ScheduleChange::Pause => {
                        conn.execute("UPDATE schedules SET paused = 1 WHERE id = ?1", [id])?;
                    }
                    // What fell due while it was paused is not run.
                    ScheduleChange::Resume if found.paused => {
                        conn.execute(
                            "UPDATE schedules SET paused = 0, checked_to_ms = MAX(checked_to_ms, ?2) WHERE id = ?1",
                            params![id, msg.now_ms],
                        )?;
                    }
                    ScheduleChange::Resume => {}
                }
                load(&conn, msg.id)
            };
            change().map_err(StoreError::database)
        })
    }
}

impl Handler<FireSchedule> for SessionStoreActor {
    type Result = Result<Option<Fired>, StoreError>;

    fn handle(&mut self, msg: FireSchedule, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            let mut conn = s.conn()?;
            let tx = conn.transaction().map_err(StoreError::database)?;
            let fired = fire(&tx, &msg).map_err(StoreError::database)?;
            tx.commit().map_err(StoreError::database)?;
            Ok(fired)
        })
    }
}

fn fire(tx: &Connection, msg: &FireSchedule) -> rusqlite::Result<Option<Fired>> {
    let Some(schedule) = load(tx, msg.id)?.filter(|s| !s.paused) else {
        return Ok(None);
    };
    if schedule.checked_to_ms >= msg.checked_to_ms {
        // Handled already (a second look at the same minute).
        return Ok(None);
    }
    let id = to_sql_id(msg.id);
    let last: Option<i64> = tx.query_row(
        "SELECT last_message_id FROM schedules WHERE id = ?1",
        [id],
        |r| r.get(0),
    )?;
    // Never two runs of one schedule waiting at once.
    let still_waiting = match last {
        Some(m) => matches!(
            state_of(tx, from_sql_id(m))?,
            Some(InboxState::Queued | InboxState::Running)
        ),
        None => false,
    };
    let mut queued = None;
    let mut skipped = msg.missed;
    if msg.run && still_waiting {
        skipped += 1;
    } else if msg.run {
        let inbound = Inbound {
            message_id: next_local_id(tx)?,
            conversation_id: schedule.conversation_id,
            profile_id: schedule.profile_id,
            conversation: schedule.conversation.clone(),
            channel_id: schedule.channel_id,
            author_id: schedule.created_by,
            text: schedule.prompt.clone(),
            attachments: Vec::new(),
            late: msg.late,
            via: Via::Schedule {
                id: schedule.id,
                cron: schedule.cron.clone(),
            },
        };
        insert(tx, &inbound)?;
        tx.execute(
            "UPDATE schedules SET last_message_id = ?2, runs = runs + 1 WHERE id = ?1",
            params![id, to_sql_id(inbound.message_id)],
        )?;
        queued = Some(inbound);
    }
    tx.execute(
        "UPDATE schedules SET checked_to_ms = ?2, skipped = skipped + ?3 WHERE id = ?1",
        params![
            id,
            msg.checked_to_ms,
            i64::try_from(skipped).unwrap_or(i64::MAX)
        ],
    )?;
    let notice_id = next_local_id(tx)?;
    Ok(load(tx, msg.id)?.map(|schedule| Fired {
        schedule,
        queued,
        still_waiting: msg.run && still_waiting,
        notice_id,
    }))
}
