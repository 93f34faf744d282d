//! What workers tell each other through Postgres notifications, and how it is written: a payload
//! is the sending worker's id on its first line, then one message a line. Messages are small
//! (pointers to rows, not rows); one too large for a notification is spilled to a table and the
//! line carries its id.
//!
//! - `e <seq> <room_id>`: the room's events up to `seq` are committed (read them from the table).
//! - `c <reason> <room_id>`: the room was deleted.
//! - `w <destination>`: rows are queued for `destination` (to the federation sender's holder).
//! - `r <destination>`: an operator asked for a delivery attempt now (to the sender's holder).
//! - `d <destination> <edu>`: an ephemeral event for `destination`, as JSON (to the sender's holder).
//! - `l <room_id> <json>`: a room's live news that is not persisted (presence, typing, a signal,
//!   another server's ephemeral event), as the engine writes it; a signal goes to the channel of
//!   the worker its device is connected through, the rest to every worker.
//! - `s <id>`: a spilled payload of further lines, for the worker(s) of the channel it came on.

/// The channel every worker listens on for rooms' news.
pub const ROOMS_CHANNEL: &str = "confab.rooms";
/// The channel of the federation sender's holder.
pub const SENDER_CHANNEL: &str = "confab.sender";

/// The channel of one worker (what is for it alone: a signal for one of its devices).
pub fn worker_channel(worker_id: &str) -> String {
    format!("confab.worker.{worker_id}")
}

/// One message between workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Committed { room_id: String, seq: i64 },
    Closed { room_id: String, reason: String },
    Wake { destination: String },
    Retry { destination: String },
    Edu { destination: String, edu: String },
    Live { room_id: String, body: String },
    Spilled { id: i64 },
}

impl Message {
    /// The message as one line (no newline).
    pub fn to_line(&self) -> String {
        match self {
            Self::Committed { room_id, seq } => format!("e {seq} {room_id}"),
            Self::Closed { room_id, reason } => format!("c {reason} {room_id}"),
            Self::Wake { destination } => format!("w {destination}"),
            Self::Retry { destination } => format!("r {destination}"),
            Self::Edu { destination, edu } => format!("d {destination} {edu}"),
            Self::Live { room_id, body } => format!("l {room_id} {body}"),
            Self::Spilled { id } => format!("s {id}"),
        }
    }

    /// Reads one line; `None` for a line this version does not know (a newer worker's, during
    /// a rolling upgrade), which is skipped.
    pub fn parse(line: &str) -> Option<Self> {
        let (kind, rest) = line.split_once(' ')?;
        match kind {
            "e" => {
                let (seq, room_id) = rest.split_once(' ')?;
                Some(Self::Committed {
                    room_id: room_id.to_owned(),
                    seq: seq.parse().ok()?,
                })
            }
            "c" => {
                let (reason, room_id) = rest.split_once(' ')?;
                let known = !reason.is_empty()
                    && reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
                known.then(|| Self::Closed {
                    room_id: room_id.to_owned(),
                    reason: reason.to_owned(),
                })
            }
            "w" => Some(Self::Wake {
                destination: rest.to_owned(),
            }),
            "r" => Some(Self::Retry {
                destination: rest.to_owned(),
            }),
            "d" => {
                let (destination, edu) = rest.split_once(' ')?;
                Some(Self::Edu {
                    destination: destination.to_owned(),
                    edu: edu.to_owned(),
                })
            }
            "l" => {
                let (room_id, body) = rest.split_once(' ')?;
                Some(Self::Live {
                    room_id: room_id.to_owned(),
                    body: body.to_owned(),
                })
            }
            "s" => Some(Self::Spilled {
                id: rest.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// Packs lines into payloads of at most `max` bytes, each opening with `worker_id`'s line, in
/// order. A line that cannot fit in a payload of its own is returned apart, to be spilled.
pub fn pack(worker_id: &str, lines: &[String], max: usize) -> (Vec<String>, Vec<String>) {
    let mut payloads = Vec::new();
    let mut too_large = Vec::new();
    let mut current = String::new();
    for line in lines {
        if worker_id.len() + 1 + line.len() > max {
            too_large.push(line.clone());
            continue;
        }
        if !current.is_empty() && current.len() + 1 + line.len() > max {
            payloads.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current.push_str(worker_id);
        }
        current.push('\n');
        current.push_str(line);
    }
    if !current.is_empty() {
        payloads.push(current);
    }
    (payloads, too_large)
}

/// Splits a payload into its sender's worker id and its messages.
pub fn unpack(payload: &str) -> (&str, Vec<Message>) {
    let mut lines = payload.split('\n');
    let from = lines.next().unwrap_or_default();
    (from, lines.filter_map(Message::parse).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_reads_back_as_written() {
        let all = [
            Message::Committed {
                room_id: "!abc:example.org".into(),
                seq: 42,
            },
            Message::Closed {
                room_id: "!abc:example.org:8448".into(),
                reason: "expired".into(),
            },
            Message::Wake {
                destination: "other.example:8448".into(),
            },
            Message::Retry {
                destination: "other.example".into(),
            },
            Message::Edu {
                destination: "other.example".into(),
                edu: r#"{"edu_type":"m.typing","content":{"a b":1}}"#.into(),
            },
            Message::Live {
                room_id: "!abc:example.org".into(),
                body: r#"{"typing":{"user_id":"@a b:c"}}"#.into(),
            },
            Message::Spilled { id: 7 },
        ];
        for message in all {
            assert_eq!(Message::parse(&message.to_line()), Some(message));
        }
        assert_eq!(Message::parse("z something new"), None);
        assert_eq!(Message::parse("e notanumber !a:b"), None);
        assert_eq!(Message::parse("c Not-A-Reason !a:b"), None);
    }

    #[test]
    fn lines_are_packed_in_order_under_the_limit_and_oversized_ones_set_apart() {
        let lines: Vec<String> = (0..10).map(|i| format!("e {i} !room{i}:x")).collect();
        let big = "d x ".to_owned() + &"y".repeat(100);
        let mut all = lines.clone();
        all.insert(3, big.clone());
        let (payloads, too_large) = pack("w1", &all, 40);
        assert_eq!(too_large, vec![big]);
        let mut read = Vec::new();
        for payload in &payloads {
            assert!(payload.len() <= 40, "{payload:?}");
            let (from, messages) = unpack(payload);
            assert_eq!(from, "w1");
            read.extend(messages.iter().map(Message::to_line));
        }
        assert_eq!(read, lines);
        assert!(payloads.len() > 1);
        assert_eq!(pack("w1", &[], 40), (Vec::new(), Vec::new()));
    }
}
