//! Training: recipes (strong, simple, poor-fit), SGD, schedules, the resumable training loop
//! with checkpoints, and picking the poor-fit checkpoints.

pub mod config;
pub mod pick;
pub mod schedule;
pub mod sgd;
pub mod trainer;
