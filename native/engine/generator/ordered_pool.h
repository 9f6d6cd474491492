// Worker threads for the generator's region encoding, with two guarantees:
// results are consumed in the order the work was submitted (so the payload
// is the same bytes whatever the thread count and timing), and the work in
// flight, from submission until its result is consumed, never reserves
// more than `capacity` bytes (so memory stays within the budget whatever
// the thread count; fewer threads run at once when items are large).
//
// Submit() blocks the producer until the item's bytes are free, consuming
// finished results at the front meanwhile; `finish` always runs on the
// producer's thread (Submit or Finish), in submission order. After the
// first failure (of a work or a finish) nothing more runs and every later
// call returns that status.
#ifndef REVPATCH_ENGINE_GENERATOR_ORDERED_POOL_H_
#define REVPATCH_ENGINE_GENERATOR_ORDERED_POOL_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "status.h"

namespace revpatch {

class OrderedPool {
 public:
  // threads >= 1.
  OrderedPool(unsigned threads, uint64_t capacity);
  ~OrderedPool();
  OrderedPool(const OrderedPool&) = delete;
  OrderedPool& operator=(const OrderedPool&) = delete;

  // `work` (may be empty: nothing to run) on a worker, then `finish` here.
  // An item larger than the capacity waits until it is alone.
  Status Submit(uint64_t cost, std::function<Status()> work, std::function<Status()> finish);
  // Waits for every item and consumes the remaining results.
  Status Finish();
  // Most bytes reserved at once so far (for tests).
  uint64_t peak_reserved() const { return peak_; }

 private:
  struct Item {
    uint64_t cost = 0;
    std::function<Status()> work;
    std::function<Status()> finish;
    bool done = false;
    Status status;
  };
  void WorkerLoop();
  // Consumes finished items at the front; with `wait`, waits until the
  // front is done (or the pool is empty). Called with the lock held.
  Status ConsumeFront(std::unique_lock<std::mutex>* lock, bool wait);

  const uint64_t capacity_;
  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable item_done_;
  std::deque<std::shared_ptr<Item>> order_;    // submitted, not consumed
  std::deque<std::shared_ptr<Item>> pending_;  // submitted, not started
  uint64_t reserved_ = 0;
  uint64_t peak_ = 0;
  bool stopping_ = false;
  Status error_;
  std::vector<std::thread> workers_;
};

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_GENERATOR_ORDERED_POOL_H_
