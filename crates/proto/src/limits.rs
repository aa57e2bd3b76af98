//! Limits a node puts on its peers, as plain arithmetic on a given time:
//! a per-peer token bucket for request rate, and static checks of each
//! request before any of its body is read.

use std::time::Duration;

use super::audit;
use super::{ErrorCode, Request};

/// The limits a node enforces (from its configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest shard accepted by `Put`.
    pub max_shard: u64,
    /// Longest `Get` range served (whole shards are bounded by `max_shard`).
    pub max_get_range: u64,
    /// Requests a peer may make in a burst.
    pub burst: u32,
    /// Requests per second a peer may sustain.
    pub per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_shard: 16 << 20,
            max_get_range: 16 << 20,
            burst: 256,
            per_second: 128,
        }
    }
}

/// A request turned away before it was served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The code sent to the peer.
    pub code: ErrorCode,
    /// What happened and what to do.
    pub message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A settings change within the protocol's bounds.
fn check_settings(change: &crate::SettingsChange) -> Result<(), Refusal> {
    if let Some(Some(site)) = &change.site
        && (site.is_empty() || site.len() > crate::MAX_SITE || site.chars().any(char::is_control))
    {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!("a site is 1 to {} bytes of printable text", crate::MAX_SITE),
        ));
    }
    if change
        .donation_owners
        .as_ref()
        .is_some_and(|owners| owners.len() > crate::MAX_DONATION_OWNERS)
    {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!(
                "a donation policy names at most {} owners",
                crate::MAX_DONATION_OWNERS
            ),
        ));
    }
    Ok(())
}

/// Checks a request against the limits; nothing of its body has been read.
pub fn validate(request: &Request, limits: &Limits) -> Result<(), Refusal> {
    match request {
        Request::Put { len, .. } if *len > limits.max_shard => Err(Refusal::new(
            ErrorCode::TooLarge,
            format!(
                "a shard of {len} bytes exceeds this node's limit of {} bytes; use smaller shards",
                limits.max_shard
            ),
        )),
        Request::Get {
            range: Some((_, len)),
            ..
        } if *len > limits.max_get_range => Err(Refusal::new(
            ErrorCode::TooLarge,
            format!(
                "a range of {len} bytes exceeds this node's limit of {} bytes; ask for less",
                limits.max_get_range
            ),
        )),
        Request::Audit { ranges, .. } => {
            audit::check_size(ranges).map_err(|e| Refusal::new(ErrorCode::TooLarge, e.to_string()))
        }
        Request::Delete { signature, .. } if signature.len() != 64 => Err(Refusal::new(
            ErrorCode::BadRequest,
            "a delete signature is 64 bytes (Ed25519)",
        )),
        Request::Claim { signature, .. }
        | Request::Transfer { signature, .. }
        | Request::Drain { signature, .. }
        | Request::Evict { signature, .. }
        | Request::Settings { signature, .. }
        | Request::UpdateOffer { signature, .. }
        | Request::AdoptDisks { signature, .. }
            if signature.len() != 64 =>
        {
            Err(Refusal::new(
                ErrorCode::BadRequest,
                "an owner signature is 64 bytes (Ed25519)",
            ))
        }
        Request::Moved { moved } if moved.signature.len() != 64 => Err(Refusal::new(
            ErrorCode::BadRequest,
            "an owner signature is 64 bytes (Ed25519)",
        )),
        Request::Settings { change, .. } => check_settings(change),
        Request::UpdateOffer { bundle, .. } => {
            if bundle.size == 0 || bundle.size > super::MAX_BUNDLE {
                Err(Refusal::new(
                    ErrorCode::TooLarge,
                    format!(
                        "an update bundle is 1 byte to {} MiB, not {} bytes",
                        super::MAX_BUNDLE >> 20,
                        bundle.size
                    ),
                ))
            } else if bundle.version.is_empty()
                || bundle.version.len() > super::MAX_RELEASE_VERSION
                || !bundle
                    .version
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'.')
            {
                Err(Refusal::new(
                    ErrorCode::BadRequest,
                    "a bundle's release version is numbers and dots, at most 32 bytes",
                ))
            } else {
                Ok(())
            }
        }
        Request::UpdatePart { len, .. } | Request::UpdateGet { len, .. }
            if *len == 0 || *len > limits.max_shard =>
        {
            Err(Refusal::new(
                ErrorCode::TooLarge,
                format!(
                    "an update part is 1 byte to {} bytes (the largest shard)",
                    limits.max_shard
                ),
            ))
        }
        Request::Track {
            segments, grant, ..
        } => {
            if segments.len() > super::MAX_TRACK {
                return Err(Refusal::new(
                    ErrorCode::TooLarge,
                    format!("at most {} segments per Track", super::MAX_TRACK),
                ));
            }
            check_grant(grant)?;
            for segment in segments {
                let total = usize::from(segment.k) + usize::from(segment.m);
                if segment.k == 0 || segment.m == 0 || segment.shards.len() != total {
                    return Err(Refusal::new(
                        ErrorCode::BadRequest,
                        "a tracked segment needs k, m of at least 1 and k + m shards",
                    ));
                }
                if segment.shard_len == 0 || segment.shard_len > limits.max_shard {
                    return Err(Refusal::new(
                        ErrorCode::TooLarge,
                        format!(
                            "a tracked shard of {} bytes is outside 1..={}",
                            segment.shard_len, limits.max_shard
                        ),
                    ));
                }
            }
            Ok(())
        }
        Request::Untrack {
            segments,
            signature,
            ..
        } => {
            if segments.len() > super::MAX_UNTRACK {
                return Err(Refusal::new(
                    ErrorCode::TooLarge,
                    format!("at most {} segments per Untrack", super::MAX_UNTRACK),
                ));
            }
            if signature.len() != 64 {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    "an owner signature is 64 bytes (Ed25519)",
                ));
            }
            Ok(())
        }
        Request::Locate {
            segments, grant, ..
        } => {
            if segments.len() > super::MAX_LOCATE {
                return Err(Refusal::new(
                    ErrorCode::TooLarge,
                    format!("at most {} segments per Locate", super::MAX_LOCATE),
                ));
            }
            check_grant(grant)
        }
        Request::RenewMany { shards, .. } if shards.len() > super::MAX_RENEW => Err(Refusal::new(
            ErrorCode::TooLarge,
            format!("at most {} shards per RenewMany", super::MAX_RENEW),
        )),
        Request::PutRoot(record) => record.verify().map_err(|e| match e {
            super::root::RootError::TooLarge(_) => Refusal::new(ErrorCode::TooLarge, e.to_string()),
            _ => Refusal::new(ErrorCode::Forbidden, e.to_string()),
        }),
        _ => Ok(()),
    }
}

fn check_grant(grant: &super::SteerGrant) -> Result<(), Refusal> {
    if grant.signature.len() == 64 {
        Ok(())
    } else {
        Err(Refusal::new(
            ErrorCode::BadRequest,
            "a steer grant's signature is 64 bytes (Ed25519)",
        ))
    }
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
/// Time is passed in (any monotonic origin), so tests need no clock.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: Duration,
}

impl RateLimiter {
    /// A full bucket at time `now`.
    pub fn new(limits: &Limits, now: Duration) -> Self {
        Self {
            tokens: f64::from(limits.burst),
            burst: f64::from(limits.burst),
            per_second: f64::from(limits.per_second),
            last: now,
        }
    }

    /// Takes one token if there is one; otherwise how long until there is.
    pub fn try_acquire(&mut self, now: Duration) -> Result<(), Duration> {
        let elapsed = now.saturating_sub(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if self.per_second > 0.0 {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second,
            ))
        } else {
            Err(Duration::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OwnerId, ShardId};

    #[test]
    fn a_burst_is_allowed_then_the_rate_holds() {
        let limits = Limits {
            burst: 10,
            per_second: 5,
            ..Limits::default()
        };
        let start = Duration::from_secs(100);
        let mut bucket = RateLimiter::new(&limits, start);
        for _ in 0..10 {
            bucket.try_acquire(start).unwrap();
        }
        let wait = bucket.try_acquire(start).unwrap_err();
        assert!((wait.as_secs_f64() - 0.2).abs() < 1e-9, "{wait:?}");
        // Over 10 simulated seconds, exactly 50 more requests get through.
        let mut allowed = 0;
        for ms in (0..10_000).step_by(10) {
            if bucket
                .try_acquire(start + Duration::from_millis(ms + 10))
                .is_ok()
            {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 50);
        // A clock that steps back does not mint tokens.
        let mut bucket = RateLimiter::new(&limits, start);
        for _ in 0..10 {
            bucket.try_acquire(start).unwrap();
        }
        assert!(bucket.try_acquire(Duration::ZERO).is_err());
    }

    #[test]
    fn requests_over_the_limits_are_refused_before_their_body() {
        let limits = Limits::default();
        let put = |len| Request::Put {
            id: ShardId([0; 32]),
            len,
            owner: OwnerId([0; 32]),
            lease_expires: 0,
        };
        assert!(validate(&put(limits.max_shard), &limits).is_ok());
        let refusal = validate(&put(limits.max_shard + 1), &limits).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::TooLarge);
        assert!(refusal.message.contains("use smaller shards"));
        let audit = Request::Audit {
            id: ShardId([0; 32]),
            ranges: vec![(0, 1); 17],
        };
        assert_eq!(
            validate(&audit, &limits).unwrap_err().code,
            ErrorCode::TooLarge
        );
        let delete = Request::Delete {
            id: ShardId([0; 32]),
            not_after: 0,
            signature: vec![0; 10],
        };
        assert_eq!(
            validate(&delete, &limits).unwrap_err().code,
            ErrorCode::BadRequest
        );
    }
}
