//! A message's status as Twilio reports it, read once into a fixed set: which statuses are
//! final, which error codes a call can get past, and what labels and texts they make.

/// Twilio's message statuses; anything else is [`Status::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Accepted,
    Scheduled,
    Queued,
    Sending,
    Sent,
    Delivered,
    Read,
    Undelivered,
    Failed,
    Canceled,
    Other,
}

impl Status {
    pub fn of(text: &str) -> Status {
        match text {
            "accepted" => Status::Accepted,
            "scheduled" => Status::Scheduled,
            "queued" => Status::Queued,
            "sending" => Status::Sending,
            "sent" => Status::Sent,
            "delivered" => Status::Delivered,
            "read" => Status::Read,
            "undelivered" => Status::Undelivered,
            "failed" => Status::Failed,
            "canceled" => Status::Canceled,
            _ => Status::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Scheduled => "scheduled",
            Status::Queued => "queued",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Read => "read",
            Status::Undelivered => "undelivered",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
            Status::Other => "other",
        }
    }

    /// Nothing more will happen to the message.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Delivered
                | Status::Read
                | Status::Undelivered
                | Status::Failed
                | Status::Canceled
        )
    }

    /// It reached the phone.
    pub fn is_delivered(self) -> bool {
        matches!(self, Status::Delivered | Status::Read)
    }

    /// It will never reach the phone.
    pub fn is_lost(self) -> bool {
        matches!(self, Status::Undelivered | Status::Failed)
    }
}

/// Twilio's error codes the `code` label names; any other is `other` (the label set stays
/// bounded whatever an upstream sends).
const CODES: [(u32, &str); 13] = [
    (30001, "30001"),
    (30002, "30002"),
    (30003, "30003"),
    (30004, "30004"),
    (30005, "30005"),
    (30006, "30006"),
    (30007, "30007"),
    (30008, "30008"),
    (30009, "30009"),
    (30010, "30010"),
    (30034, "30034"),
    (30450, "30450"),
    (30453, "30453"),
];

/// The SMS cannot arrive but a call can: 30003 unreachable handset, 30005 unknown or
/// inactive number, 30006 landline or unreachable carrier. Never 30007 (filtered as spam:
/// the content, not the line) nor anything else.
const CALL_CAN_REACH: [u32; 3] = [30003, 30005, 30006];

/// What became of a message: its status and, for a failure, Twilio's error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fate {
    pub status: Status,
    pub code: Option<u32>,
}

impl Fate {
    pub fn new(status: &str, code: Option<u32>) -> Fate {
        Fate {
            status: Status::of(status),
            // A delivered message carries no error worth naming.
            code: code.filter(|c| *c != 0),
        }
    }

    /// The `code` label: from the fixed list, `other`, or empty when there is none.
    pub fn code_label(&self) -> &'static str {
        match self.code {
            None => "",
            Some(code) => CODES
                .iter()
                .find(|(c, _)| *c == code)
                .map_or("other", |(_, label)| label),
        }
    }

    /// What `deliveryStatus` answers: `delivered`, `undelivered 30003`…
    pub fn text(&self) -> String {
        match self.code {
            Some(code) if self.status.is_lost() => format!("{} {code}", self.status.name()),
            _ => self.status.name().to_owned(),
        }
    }

    /// Lost in a way a voice call can get past.
    pub fn call_can_reach(&self) -> bool {
        self.status.is_lost() && self.code.is_some_and(|c| CALL_CAN_REACH.contains(&c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_undelivered_or_failed_with_30003_30005_30006_are_for_a_call() {
        for (status, code, call) in [
            ("undelivered", Some(30003), true),
            ("failed", Some(30005), true),
            ("undelivered", Some(30006), true),
            ("undelivered", Some(30007), false),
            ("undelivered", Some(30008), false),
            ("failed", None, false),
            ("delivered", Some(30003), false),
            ("sent", None, false),
        ] {
            assert_eq!(
                Fate::new(status, code).call_can_reach(),
                call,
                "{status} {code:?}"
            );
        }
    }

    #[test]
    fn finals_labels_and_texts() {
        assert!(Status::of("delivered").is_final() && Status::of("read").is_delivered());
        assert!(!Status::of("sent").is_final() && !Status::of("nonsense").is_final());
        let lost = Fate::new("undelivered", Some(30003));
        assert_eq!(
            (lost.text(), lost.code_label()),
            ("undelivered 30003".into(), "30003")
        );
        assert_eq!(Fate::new("failed", Some(12345)).code_label(), "other");
        assert_eq!(Fate::new("delivered", Some(0)).code_label(), "");
    }
}
