//! The reconciler's pass slots, shared fairly between teams. At most `total` passes run at
//! once. Each team may always use up to its `share`; beyond it, a team borrows free slots, but
//! never the last `reserve` of them, which stay for the other teams. So one team alone gets
//! nearly all the slots, and one team's dead or stalling servers (each pass holding its slot
//! until pgplane's deadlines end it) can never keep another team's passes waiting for a slot.
//! Passes waiting for a slot are served first come, first served among those a free slot may
//! go to: a pass retried after a failure queues behind the passes already waiting, so a team's
//! failing clusters cannot keep its other clusters from ever having a pass.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::oneshot;
use uuid::Uuid;

/// The slots and who holds them.
pub(crate) struct Slots {
    total: usize,
    share: usize,
    reserve: usize,
    state: Mutex<State>,
}

/// What is free, held and waiting; changed only under the lock.
struct State {
    free: usize,
    /// Slots held per team (teams with none are removed).
    held: HashMap<Uuid, usize>,
    /// Passes waiting for a slot, oldest first.
    queue: VecDeque<Waiter>,
    next_ticket: u64,
}

struct Waiter {
    ticket: u64,
    team_id: Uuid,
    granted: oneshot::Sender<()>,
}

/// A slot held by one pass, counted in its team's share; given back when dropped.
pub(crate) struct Slot<'a> {
    slots: &'a Slots,
    team_id: Uuid,
}

/// A pass's place in the queue; leaves it (or gives back a slot granted but never taken) when
/// the waiting pass is cancelled.
struct Queued<'a> {
    slots: &'a Slots,
    ticket: u64,
    team_id: Uuid,
    taken: bool,
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
        let state = State { free: total, held: HashMap::new(), queue: VecDeque::new(), next_ticket: 0 };
        Self { total, share, reserve: (total / 4).max(1), state: Mutex::new(state) }
    }

    /// How many slots there are, and each team's share.
    pub fn limits(&self) -> (usize, usize) {
        (self.total, self.share)
    }

    /// Waits for a slot for one of `team_id`'s passes, behind the passes already waiting.
    pub async fn acquire(&self, team_id: Uuid) -> Slot<'_> {
        let (granted, mut queued) = {
            let mut state = self.state.lock().expect("slots lock");
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            let (tx, rx) = oneshot::channel();
            state.queue.push_back(Waiter { ticket, team_id, granted: tx });
            self.grant(&mut state);
            (rx, Queued { slots: self, ticket, team_id, taken: false })
        };
        // The sender lives in the queue until the slot is granted: it is never dropped unsent
        // while this future waits (a cancelled wait removes it itself, in `Queued::drop`).
        granted.await.expect("a waiter leaves the queue only when granted or cancelled");
        queued.taken = true;
        Slot { slots: self, team_id }
    }

    /// Gives free slots to the oldest waiters that may have them: any waiter within its team's
    /// share, a borrower only while more than the reserve is free.
    fn grant(&self, state: &mut State) {
        let mut i = 0;
        while state.free > 0 && i < state.queue.len() {
            let team_id = state.queue[i].team_id;
            let held = state.held.get(&team_id).copied().unwrap_or(0);
            if held < self.share || state.free > self.reserve {
                let waiter = state.queue.remove(i).expect("index checked");
                state.free -= 1;
                *state.held.entry(team_id).or_default() += 1;
                let _ = waiter.granted.send(());
            } else {
                i += 1;
            }
        }
    }

    /// Gives back one of `team_id`'s slots and passes it on.
    fn release(&self, team_id: Uuid) {
        let mut state = self.state.lock().expect("slots lock");
        if let Some(n) = state.held.get_mut(&team_id) {
            *n -= 1;
            if *n == 0 {
                state.held.remove(&team_id);
            }
        }
        state.free += 1;
        self.grant(&mut state);
    }

    /// The slots `team_id` holds.
    #[cfg(test)]
    fn held_by(&self, team_id: Uuid) -> usize {
        self.state.lock().expect("slots lock").held.get(&team_id).copied().unwrap_or(0)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        let mut state = self.slots.state.lock().expect("slots lock");
        if let Some(at) = state.queue.iter().position(|w| w.ticket == self.ticket) {
            state.queue.remove(at);
            return;
        }
        // Granted while the wait was being cancelled: the slot goes to the next waiter.
        drop(state);
        self.slots.release(self.team_id);
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.slots.release(self.team_id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    async fn within(ms: u64, slots: &Slots, team_id: Uuid) -> Option<Slot<'_>> {
        tokio::time::timeout(Duration::from_millis(ms), slots.acquire(team_id)).await.ok()
    }

    #[tokio::test]
    async fn one_team_alone_uses_all_but_the_reserve_and_another_team_gets_the_reserve() {
        let slots = Slots::new(8, 0);
        assert_eq!(slots.limits(), (8, 4));
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut held = Vec::new();
        for _ in 0..6 {
            held.push(slots.acquire(a).await);
        }
        assert!(within(50, &slots, a).await.is_none(), "the reserve is not lent beyond a team's share");
        for _ in 0..2 {
            held.push(within(50, &slots, b).await.expect("another team gets the reserved slots at once"));
        }
        // A slot freed by team A (now 5, past its share) is not lent to it again while only
        // the reserve is free; team B (within its share) takes it.
        drop(held.remove(0));
        assert!(within(50, &slots, a).await.is_none(), "team A borrows only past the reserve");
        assert!(within(50, &slots, b).await.is_some(), "team B is within its share");
    }

    #[tokio::test]
    async fn waiting_passes_are_served_in_the_order_they_came() {
        // Three passes of team A hold every slot but the reserve; A's other clusters queue.
        // A pass that comes when a slot frees (as a failed cluster's retry does) queues behind
        // them instead of taking it.
        let slots = Arc::new(Slots::new(4, 2));
        let a = Uuid::from_u128(1);
        let mut running = Vec::new();
        for _ in 0..3 {
            running.push(slots.acquire(a).await);
        }
        let served = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for n in 0..4 {
            let (slots, served) = (slots.clone(), served.clone());
            waiters.push(tokio::spawn(async move {
                let _slot = slots.acquire(a).await;
                served.lock().unwrap().push(n);
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for expected in 1..=3 {
            drop(running.pop());
            assert!(within(20, &slots, a).await.is_none(), "a newcomer queues behind the waiters");
            assert_eq!(*served.lock().unwrap(), (0..expected).collect::<Vec<_>>());
        }
        assert_eq!(slots.held_by(a), 3);
        for w in waiters {
            w.abort();
        }
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_the_queue_and_loses_no_slot() {
        let slots = Slots::new(2, 1);
        let a = Uuid::from_u128(1);
        let first = slots.acquire(a).await;
        for _ in 0..3 {
            assert!(within(20, &slots, a).await.is_none(), "one slot is the reserve");
        }
        drop(first);
        let again = within(50, &slots, a).await.expect("the slot came back");
        assert_eq!(slots.held_by(a), 1);
        drop(again);
        assert_eq!(slots.held_by(a), 0);
        assert_eq!(slots.state.lock().unwrap().free, 2);
    }
}
