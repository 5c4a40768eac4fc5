//! [`Grouper`]: DMA copies gathered into groups of the copy engine's size, each full
//! group sent into the flight with the payload of its items.

use cascade_core::Result;

use crate::copy::{DmaCopy, Flight};

/// Copies gathered into groups of the engine's size; each full group goes into the
/// flight with the payload of its items.
pub(crate) struct Grouper<T> {
    pub(crate) device: bool,
    pub(crate) copies: Vec<DmaCopy>,
    pub(crate) payload: Vec<T>,
    pub(crate) group: usize,
}

impl<T> Grouper<T> {
    pub(crate) fn new(device: bool, group: usize) -> Self {
        Self {
            device,
            copies: Vec::with_capacity(group),
            payload: Vec::with_capacity(group),
            group,
        }
    }

    pub(crate) fn add(
        &mut self,
        flight: &mut Flight<'_, Vec<T>>,
        copy: DmaCopy,
        item: T,
    ) -> Result<()> {
        self.copies.push(copy);
        self.payload.push(item);
        if self.copies.len() >= self.group {
            self.flush(flight)
        } else {
            Ok(())
        }
    }

    pub(crate) fn flush(&mut self, flight: &mut Flight<'_, Vec<T>>) -> Result<()> {
        if self.copies.is_empty() {
            return Ok(());
        }
        let payload = std::mem::replace(&mut self.payload, Vec::with_capacity(self.group));
        let pushed = if self.device {
            flight.push_device(&self.copies, payload)
        } else {
            flight.push(&self.copies, payload)
        };
        self.copies.clear();
        pushed
    }
}
