//! The fault journal: what was applied, how, and the steps that heal it — read back by `fault list`, `cleanup` and the report.
