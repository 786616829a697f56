//! Backoff math for Elixir: `TinkexNative.Backoff`.

use rand::SeedableRng;
use rustler::NifResult;
use tinkex_core::backoff::Backoff;

fn backoff(base: u64, max: u64, jitter: f64) -> NifResult<Backoff> {
    if !(0.0..=1.0).contains(&jitter) || base > max {
        return Err(rustler::Error::BadArg);
    }
    Ok(Backoff::new(base, max, jitter))
}

/// The delay of retry `attempt` for the draw `u` in [0, 1).
#[rustler::nif]
fn backoff_delay(base: u64, max: u64, jitter: f64, attempt: u64, u: f64) -> NifResult<u64> {
    if !(0.0..1.0).contains(&u) {
        return Err(rustler::Error::BadArg);
    }
    Ok(backoff(base, max, jitter)?.delay_ms(attempt, u))
}

/// The delays of retries `0..count` drawn from a generator seeded with
/// `seed`: the same seed gives the same schedule.
#[rustler::nif]
fn backoff_schedule(
    base: u64,
    max: u64,
    jitter: f64,
    count: u32,
    seed: u64,
) -> NifResult<Vec<u64>> {
    if count > 10_000 {
        return Err(rustler::Error::BadArg);
    }
    let b = backoff(base, max, jitter)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    Ok((0..u64::from(count))
        .map(|k| b.sample_ms(k, &mut rng))
        .collect())
}

/// The delay of retry `attempt` with a fresh random draw.
#[rustler::nif]
fn backoff_random(base: u64, max: u64, jitter: f64, attempt: u64) -> NifResult<u64> {
    Ok(backoff(base, max, jitter)?.sample_ms(attempt, &mut rand::rng()))
}
