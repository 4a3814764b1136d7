//! # Sluice semantic cache (in progress)
//!
//! Will answer repeated and paraphrased prompts from Redis. So far: the paraphrase guard
//! ([`same_question`]), which decides whether two prompts that embed close together really ask
//! the same thing.

pub mod same_question;
