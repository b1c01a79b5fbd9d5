//! wedge: scenario engine, watchdog, statistics and reports.
