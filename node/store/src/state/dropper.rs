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

enum Garbage {
    View(Arc<SmView>),
    Change(Arc<AppliedChange>),
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
                while let Ok(garbage) = rx.recv() {
                    match garbage {
                        Garbage::View(view) => drop(view),
                        Garbage::Change(change) => {
                            recent.push_back(change);
                            while recent.len() > keep_changes {
                                recent.pop_front();
                            }
                        }
                    }
                }
            });
        // Without the thread everything is simply dropped inline.
        Dropper {
            tx: spawned.ok().map(|_| tx),
        }
    }

    pub fn view(&self, view: Arc<SmView>) {
        if let Some(tx) = &self.tx {
            // If the thread is gone the value comes back in the error and drops here.
            let _ = tx.send(Garbage::View(view));
        }
    }

    pub fn change(&self, change: Arc<AppliedChange>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Garbage::Change(change));
        }
    }
}
