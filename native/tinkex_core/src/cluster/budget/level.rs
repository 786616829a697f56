//! How a node's demand compares with its lease: the only changes the
//! cluster is told about. Every boundary has some hysteresis, so a demand
//! that hovers around one does not send a report per sample.

/// The budget's state as the cluster sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Nothing in use, nothing waiting.
    Idle,
    /// Demand (in use + waiting) at most half the lease; left again only
    /// above three quarters of it.
    Surplus,
    /// Demand within the lease.
    Fits,
    /// Samples wait for permits. The value is `floor(log2(demand))`: it is
    /// reported again when demand crosses a power of two upwards, or falls
    /// below half of the last one reported. Left only once demand is
    /// clearly within the lease (at most 7/8 of it, no waiters).
    Starved(u8),
    /// More permits in use than the lease allows (a shrink or an expired
    /// lease being worked off). Leaving it tells the cluster the permits
    /// are back.
    Draining,
}

fn log2(n: u32) -> u8 {
    (31 - n.max(1).leading_zeros()) as u8
}

impl Level {
    /// The level after a change, with `used` permits held, `waiting`
    /// acquirers and a lease of `pool` usable permits.
    pub fn next(self, used: u32, waiting: u32, pool: u32) -> Level {
        let demand = u64::from(used) + u64::from(waiting);
        let pool = u64::from(pool);
        if u64::from(used) > pool {
            return Level::Draining;
        }
        if demand == 0 {
            return Level::Idle;
        }
        if waiting > 0 {
            let b = log2(u32::try_from(demand).unwrap_or(u32::MAX));
            return match self {
                Level::Starved(old) if b <= old && b + 1 >= old => self,
                _ => Level::Starved(b),
            };
        }
        match self {
            Level::Starved(_) if demand * 8 > pool * 7 => self,
            Level::Surplus if demand * 4 <= pool * 3 => self,
            _ if demand * 2 <= pool => Level::Surplus,
            _ => Level::Fits,
        }
    }

    /// The level's name, as the cluster layer receives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Idle => "idle",
            Level::Surplus => "surplus",
            Level::Fits => "fits",
            Level::Starved(_) => "starved",
            Level::Draining => "draining",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Level::{self, *};

    #[test]
    fn boundaries_have_hysteresis() {
        assert_eq!(Idle.next(0, 0, 10), Idle);
        assert_eq!(Idle.next(3, 0, 10), Surplus);
        assert_eq!(Surplus.next(7, 0, 10), Surplus, "stays up to 3/4");
        assert_eq!(Surplus.next(8, 0, 10), Fits);
        assert_eq!(Fits.next(6, 0, 10), Fits);
        assert_eq!(Fits.next(5, 0, 10), Surplus);
        assert_eq!(Fits.next(10, 1, 10), Starved(3));
        assert_eq!(
            Starved(3).next(10, 0, 10),
            Starved(3),
            "one waiter less is not news"
        );
        assert_eq!(Starved(3).next(9, 0, 10), Starved(3));
        assert_eq!(Starved(3).next(8, 0, 10), Fits);
        assert_eq!(Fits.next(11, 0, 10), Draining);
        assert_eq!(Draining.next(10, 0, 10), Fits);
    }

    #[test]
    fn starved_reports_doublings_up_and_halvings_down() {
        let l: Level = Starved(4); // demand 16..31
        assert_eq!(l.next(10, 21, 10), Starved(4));
        assert_eq!(l.next(10, 22, 10), Starved(5), "32: a new power of two");
        assert_eq!(l.next(10, 0, 0), Draining);
        assert_eq!(l.next(0, 8, 0), Starved(4), "8 is within a factor of 2");
        assert_eq!(l.next(0, 7, 0), Starved(2));
    }
}
