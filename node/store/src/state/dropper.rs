//! Frees replaced state off the apply path.
//!
//! Replacing an entity frees its old JSON tree (hundreds of small allocations for a 2 KiB body)
//! when the previous view's last reference goes away, and the broadcast channel frees the change
//! it overwrites. Done inline, that was about half of an apply. A dedicated thread holds the last
//! references instead and lets them go there.

use super::model::SmView;
use crate::types::AppliedChange;
use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::Arc;

/// What one apply leaves behind: the view it replaced and the changes it published. Sent as
/// one message per apply, so a batch of commits wakes the thread once.
struct Garbage {
    view: Arc<SmView>,
    changes: Vec<Arc<AppliedChange>>,
}

pub struct Dropper {
    tx: Option<mpsc::Sender<Garbage>>,
}

impl Dropper {
    /// `keep_changes`: how many recent changes to hold; more than the broadcast capacity, so
    /// the channel's own reference is never the last one.
    pub fn start(keep_changes: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Garbage>();
        let spawned = std::thread::Builder::new()
            .name("flagraft-dropper".into())
            .spawn(move || {
                let mut recent: VecDeque<Arc<AppliedChange>> = VecDeque::new();
                while let Ok(Garbage { view, changes }) = rx.recv() {
                    drop(view);
                    recent.extend(changes);
                    while recent.len() > keep_changes {
                        recent.pop_front();
                    }
                }
            });
        // Without the thread everything is simply dropped inline.
        Dropper {
            tx: spawned.ok().map(|_| tx),
        }
    }

    /// Hands over the replaced `view` and references to the `changes` just published.
    pub fn retire(&self, view: Arc<SmView>, changes: Vec<Arc<AppliedChange>>) {
        if let Some(tx) = &self.tx {
            // If the thread is gone the values come back in the error and drop here.
            let _ = tx.send(Garbage { view, changes });
        }
    }
}
