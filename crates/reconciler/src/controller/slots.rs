//! The reconciler's pass slots, shared fairly between teams. At most `total` passes run at
//! once. Each team may always use up to its `share`; beyond it, a team borrows free slots, but
//! never the last `reserve` of them, which stay for the other teams. So one team alone gets
//! nearly all the slots, and one team's dead or stalling servers (each pass holding its slot
//! until pgplane's deadlines end it) can never keep another team's passes waiting for a slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// The slots and who holds them.
pub(crate) struct Slots {
    total: usize,
    share: usize,
    reserve: usize,
    free: Arc<Semaphore>,
    /// Passes in flight per team (teams with none are removed).
    held: Mutex<HashMap<Uuid, usize>>,
    /// Signalled whenever a slot comes free, for passes waiting to borrow one.
    released: Notify,
}

/// A slot held by one pass (or, while `permit` is None, a team's claim on one), counted in its
/// team's share; given back when dropped.
pub(crate) struct Slot<'a> {
    slots: &'a Slots,
    team_id: Uuid,
    permit: Option<OwnedSemaphorePermit>,
}

impl Slots {
    /// `total` slots; each team's share is `share` (0: half of them, at least one), and a
    /// quarter of them (at least one) is never lent beyond a team's share.
    pub fn new(total: usize, share: usize) -> Self {
        let total = total.max(1);
        let share = match share {
            0 => (total / 2).max(1),
            n => n.min(total),
        };
        Self {
            total,
            share,
            reserve: (total / 4).max(1),
            free: Arc::new(Semaphore::new(total)),
            held: Mutex::new(HashMap::new()),
            released: Notify::new(),
        }
    }

    /// How many slots there are, and each team's share.
    pub fn limits(&self) -> (usize, usize) {
        (self.total, self.share)
    }

    /// Waits for a slot for one of `team_id`'s passes.
    pub async fn acquire(&self, team_id: Uuid) -> Slot<'_> {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before looking, so that a release in between is not missed.
            released.as_mut().enable();
            // The claim counts at once, so that the team's other passes see it while this one
            // queues (and is withdrawn if this one is cancelled).
            let (mut slot, claimed_before) = self.claim(team_id);
            if claimed_before < self.share {
                // Within its share a team queues for the next free slot.
                slot.permit = Some(self.free.clone().acquire_owned().await.expect("never closed"));
                return slot;
            }
            if self.free.available_permits() > self.reserve {
                if let Ok(permit) = self.free.clone().try_acquire_owned() {
                    slot.permit = Some(permit);
                    return slot;
                }
            }
            drop(slot);
            released.await;
        }
    }

    /// The slots `team_id` holds or has claimed.
    #[cfg(test)]
    fn held_by(&self, team_id: Uuid) -> usize {
        self.held.lock().expect("slots lock").get(&team_id).copied().unwrap_or(0)
    }

    /// Counts a claim of `team_id`'s; returns it with the team's count before it.
    fn claim(&self, team_id: Uuid) -> (Slot<'_>, usize) {
        let mut held = self.held.lock().expect("slots lock");
        let count = held.entry(team_id).or_default();
        *count += 1;
        (Slot { slots: self, team_id, permit: None }, *count - 1)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().expect("slots lock");
        if let Some(n) = held.get_mut(&self.team_id) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.team_id);
            }
        }
        drop(held);
        // Only a slot coming free is news for the waiters (a claim withdrawn by a pass that
        // found nothing to borrow is not: it would wake that very pass again, for ever).
        if let Some(permit) = self.permit.take() {
            drop(permit);
            self.slots.released.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_team_alone_uses_all_but_the_reserve_and_another_team_gets_the_reserve() {
        let slots = Slots::new(8, 0);
        assert_eq!(slots.limits(), (8, 4));
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut held = Vec::new();
        for _ in 0..6 {
            held.push(slots.acquire(a).await);
        }
        let seventh = tokio::time::timeout(std::time::Duration::from_millis(50), slots.acquire(a)).await;
        assert!(seventh.is_err(), "the reserve is not lent beyond a team's share");
        for _ in 0..2 {
            let got = tokio::time::timeout(std::time::Duration::from_millis(50), slots.acquire(b)).await;
            held.push(got.expect("another team gets the reserved slots at once"));
        }
        // A slot freed by team A (now 5, past its share) is not lent to it again while only
        // the reserve is free; team B (within its share) takes it.
        drop(held.remove(0));
        let again = tokio::time::timeout(std::time::Duration::from_millis(50), slots.acquire(a)).await;
        assert!(again.is_err(), "team A borrows only past the reserve");
        let got = tokio::time::timeout(std::time::Duration::from_millis(50), slots.acquire(b)).await;
        assert!(got.is_ok(), "team B is within its share");
    }

    #[tokio::test]
    async fn passes_queued_within_a_share_count_against_it() {
        let slots = Arc::new(Slots::new(4, 2));
        let (a, c) = (Uuid::from_u128(1), Uuid::from_u128(3));
        let mut held_by_c = Vec::new();
        for _ in 0..3 {
            held_by_c.push(slots.acquire(c).await);
        }
        let mut waiters = Vec::new();
        for _ in 0..3 {
            let slots = slots.clone();
            waiters.push(tokio::spawn(async move {
                let _slot = slots.acquire(a).await;
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            }));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(slots.held_by(a), 2, "one slot held, one claimed within the share; the third waits");
        drop(held_by_c.pop());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // The freed slot went to A's queued pass within its share; the third still waits.
        assert_eq!(slots.free.available_permits(), 0);
        assert_eq!(slots.held_by(a), 2);
        assert_eq!(waiters.iter().filter(|w| w.is_finished()).count(), 0);
        for w in waiters {
            w.abort();
        }
    }
}
