//! Small single-threaded concurrency helpers for one worker invocation (no executor of our
//! own: futures interleave at their awaits while D1, queues and services answer). The
//! combinators come from `futures-util` and `futures-channel`.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures_util::future::{select, Either};

/// Drives every future to completion concurrently; their outputs in the same order.
pub use futures_util::future::{join, join_all};

/// The halves of a [`oneshot`]; the receiver yields `Err(Canceled)` if the sender is dropped
/// without sending.
pub use futures_channel::oneshot::{Canceled, Receiver, Sender};

/// A one-value channel between two futures of the same invocation (e.g. work handed to
/// `ctx.wait_until` so it outlives the request, and the request waiting for its result).
pub fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    futures_channel::oneshot::channel()
}

/// `future`'s output, or `None` if `limit` passes first (the future is then dropped).
pub async fn with_timeout<F: Future>(future: F, limit: Duration) -> Option<F::Output> {
    before(future, worker::Delay::from(limit)).await
}

/// `future`'s output, or `None` if `deadline` finishes first. `future` is polled first, so it
/// wins a tie.
async fn before<F: Future, D: Future<Output = ()>>(future: F, deadline: D) -> Option<F::Output> {
    match select(pin!(future), pin!(deadline)).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(((), _)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    /// Polls `future` until it is ready (the futures here are woken by each other, not by I/O).
    fn block_on<F: Future>(future: F) -> F::Output {
        let mut future = Box::pin(future);
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..1000 {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
        }
        panic!("the future never finished");
    }

    /// Ready after being polled `n` times.
    async fn after_polls<T>(n: usize, value: T) -> T {
        let mut left = n;
        std::future::poll_fn(|cx| {
            if left == 0 {
                Poll::Ready(())
            } else {
                left -= 1;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .await;
        value
    }

    #[test]
    fn join_all_returns_outputs_in_input_order_whatever_order_they_finish_in() {
        let outputs = block_on(join_all(vec![after_polls(5, 1), after_polls(0, 2), after_polls(2, 3)]));
        assert_eq!(outputs, vec![1, 2, 3]);
        assert!(block_on(join_all(Vec::<std::future::Ready<()>>::new())).is_empty());
    }

    #[test]
    fn a_oneshot_delivers_the_value_sent_by_another_future() {
        let (sender, receiver) = oneshot::<&str>();
        let outputs = block_on(join_all(vec![
            Box::pin(async move { receiver.await.unwrap() }) as Pin<Box<dyn Future<Output = &str>>>,
            Box::pin(async move {
                after_polls(3, ()).await;
                sender.send("done").unwrap();
                "sent"
            }),
        ]));
        assert_eq!(outputs, vec!["done", "sent"]);
    }

    #[test]
    fn a_oneshot_whose_sender_is_dropped_is_canceled() {
        let (sender, receiver) = oneshot::<()>();
        drop(sender);
        assert_eq!(block_on(receiver), Err(Canceled));
    }

    #[test]
    fn before_gives_the_output_unless_the_deadline_finishes_first() {
        assert_eq!(block_on(before(after_polls(2, "out"), after_polls(5, ()))), Some("out"));
        assert_eq!(block_on(before(after_polls(5, "out"), after_polls(2, ()))), None);
        assert_eq!(block_on(before(after_polls(3, "out"), after_polls(3, ()))), Some("out"));
        assert_eq!(block_on(before(std::future::pending::<()>(), std::future::ready(()))), None);
    }
}
