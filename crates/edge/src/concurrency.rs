//! Small single-threaded concurrency helpers for one worker invocation (no executor of our
//! own: futures interleave at their awaits while D1, queues and services answer).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

/// Drives every future to completion concurrently; their outputs in the same order.
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut slots: Vec<Option<Pin<Box<F>>>> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = slots.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, output) in slots.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// `future`'s output, or `None` if `limit` passes first (the future is then dropped).
pub async fn with_timeout<F: Future>(future: F, limit: Duration) -> Option<F::Output> {
    let mut future = Box::pin(future);
    let mut timer = Box::pin(worker::Delay::from(limit));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

/// The sending half of a [`oneshot`].
pub struct Sender<T>(Rc<RefCell<Slot<T>>>);

/// The receiving half of a [`oneshot`]: a future of the value.
pub struct Receiver<T>(Rc<RefCell<Slot<T>>>);

/// A one-value channel between two futures of the same invocation (e.g. work handed to
/// `ctx.wait_until` so it outlives the request, and the request waiting for its result).
pub fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Rc::new(RefCell::new(Slot { value: None, waker: None }));
    (Sender(slot.clone()), Receiver(slot))
}

impl<T> Sender<T> {
    /// Delivers the value and wakes the receiver.
    pub fn send(self, value: T) {
        let waker = {
            let mut slot = self.0.borrow_mut();
            slot.value = Some(value);
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<T> {
        let mut slot = self.0.borrow_mut();
        match slot.value.take() {
            Some(value) => Poll::Ready(value),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Context;

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
    async fn after_polls(n: usize, value: u32) -> u32 {
        let mut left = n;
        std::future::poll_fn(|cx| {
            if left == 0 {
                Poll::Ready(value)
            } else {
                left -= 1;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .await
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
            Box::pin(receiver) as Pin<Box<dyn Future<Output = &str>>>,
            Box::pin(async move {
                after_polls(3, 0).await;
                sender.send("done");
                "sent"
            }),
        ]));
        assert_eq!(outputs, vec!["done", "sent"]);
    }
}
