//! Byte and time accounting.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::messages::{Direction, MessageKind};

/// Messages and bytes of one message type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindTraffic {
    /// Messages sent.
    pub messages: u64,
    /// Bytes on the wire, envelopes included.
    pub bytes: u64,
}

/// Traffic per message type (and so per direction).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traffic {
    by_kind: BTreeMap<MessageKind, KindTraffic>,
}

impl Traffic {
    /// Records one message of `bytes` bytes.
    pub fn record(&mut self, kind: MessageKind, bytes: usize) {
        let e = self.by_kind.entry(kind).or_default();
        e.messages += 1;
        e.bytes += bytes as u64;
    }

    /// Traffic of one type.
    #[must_use]
    pub fn kind(&self, kind: MessageKind) -> KindTraffic {
        self.by_kind.get(&kind).copied().unwrap_or_default()
    }

    /// Every type that was sent at least once.
    pub fn kinds(&self) -> impl Iterator<Item = (MessageKind, KindTraffic)> + '_ {
        self.by_kind.iter().map(|(&k, &t)| (k, t))
    }

    /// Total bytes in one direction.
    #[must_use]
    pub fn bytes(&self, direction: Direction) -> u64 {
        self.by_kind
            .iter()
            .filter(|(k, _)| k.direction() == direction)
            .map(|(_, t)| t.bytes)
            .sum()
    }

    /// Adds another record into this one.
    pub fn merge(&mut self, other: &Self) {
        for (k, t) in other.kinds() {
            let e = self.by_kind.entry(k).or_default();
            e.messages += t.messages;
            e.bytes += t.bytes;
        }
    }
}

/// The phases of a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Client: encoding and encrypting inputs, activations and deltas.
    ClientEncrypt,
    /// Server: the linear layers of the forward pass.
    ServerForward,
    /// Client: decrypting layer outputs, activations, their derivatives, the loss.
    ClientNonlinear,
    /// Server: `Wᵀδ`, per-sample weight gradients, the bias update.
    ServerBackward,
    /// Client: decrypting per-sample gradients, clipping, summing, noising.
    ClientGradients,
    /// Server: applying the noisy gradient to `W`.
    ServerUpdate,
}

impl Phase {
    /// Every phase, in step order.
    pub const ALL: [Self; 6] = [
        Self::ClientEncrypt,
        Self::ServerForward,
        Self::ClientNonlinear,
        Self::ServerBackward,
        Self::ClientGradients,
        Self::ServerUpdate,
    ];

    /// A stable snake-case name (for reports and JSON).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::ClientEncrypt => "client_encrypt",
            Self::ServerForward => "server_forward",
            Self::ClientNonlinear => "client_nonlinear",
            Self::ServerBackward => "server_backward",
            Self::ClientGradients => "client_decrypt_clip_noise",
            Self::ServerUpdate => "server_update",
        }
    }
}

/// Wall time per phase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhaseTimes {
    times: BTreeMap<Phase, Duration>,
}

impl PhaseTimes {
    /// Adds `d` to `phase`.
    pub fn add(&mut self, phase: Phase, d: Duration) {
        *self.times.entry(phase).or_default() += d;
    }

    /// Time spent in `phase`.
    #[must_use]
    pub fn get(&self, phase: Phase) -> Duration {
        self.times.get(&phase).copied().unwrap_or_default()
    }

    /// Sum over all phases.
    #[must_use]
    pub fn total(&self) -> Duration {
        self.times.values().sum()
    }

    /// Adds another record into this one.
    pub fn merge(&mut self, other: &Self) {
        for (&p, &d) in &other.times {
            self.add(p, d);
        }
    }
}
