//! Reading a topic's history without subscribing: what a server API answers
//! (`GET /api/history`), page by page. A subscriber recovers with
//! [`Hub::subscribe_from`] instead, which ties the read to the live publications.

use std::time::Instant;

use super::Hub;
use super::backend::Pending;
use super::history::{HistoryPage, Position};
use crate::error::Error;

impl Hub {
    /// Up to `limit` publications of `topic`'s history, oldest first: those right
    /// after `since` when they are all still kept, else from the oldest kept
    /// ([`HistoryPage::gap`] says which); [`HistoryPage::more`] when more follow. A
    /// read creates nothing: a topic without a record answers `position: None`.
    ///
    /// Errors: [`Error::InvalidAccess`] on a hub without history; the backend's when
    /// it cannot read (Redis unreachable: [`Error::Unavailable`]).
    ///
    /// ```
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// use wsevents::hub::{History, Hub};
    /// let hub = Hub::builder().history(History::default()).build();
    /// let first = hub.publish_confirmed("news", "one", None).await?;
    /// hub.publish_confirmed("news", "two", None).await?;
    /// let page = hub.read_history("news", Some(&first), 10).await?;
    /// assert_eq!(page.publications.len(), 1);
    /// assert!(!page.gap && !page.more);
    /// # Ok(()) }
    /// ```
    pub fn read_history(
        &self,
        topic: &str,
        since: Option<&Position>,
        limit: usize,
    ) -> Pending<HistoryPage> {
        let inner = &self.inner;
        let Some(config) = inner.history else {
            return Pending::ready(Err(Error::InvalidAccess(
                "this hub keeps no history".into(),
            )));
        };
        if inner.history_in_backend {
            return inner.backend.read_history(topic, since, limit);
        }
        let page = loop {
            let Some(cell) = inner.topics.get(topic) else {
                break HistoryPage {
                    position: None,
                    publications: Vec::new(),
                    gap: since.is_some(),
                    more: false,
                };
            };
            let mut state = cell.lock();
            if state.removed {
                continue;
            }
            let page = match state.history.as_mut() {
                Some(history) => history.read(since, limit, &config, Instant::now()),
                None => HistoryPage {
                    position: None,
                    publications: Vec::new(),
                    gap: since.is_some(),
                    more: false,
                },
            };
            // The read trims what is past the history's bounds: the budget is told.
            inner.budget.recharge(&mut state);
            break page;
        };
        Pending::ready(Ok(page))
    }
}
