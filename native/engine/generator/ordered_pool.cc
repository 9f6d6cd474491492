#include "ordered_pool.h"

#include <algorithm>
#include <utility>

namespace revpatch {

OrderedPool::OrderedPool(unsigned threads, uint64_t capacity) : capacity_(capacity) {
  threads = std::max(1u, threads);
  workers_.reserve(threads);
  for (unsigned i = 0; i < threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

OrderedPool::~OrderedPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    pending_.clear();
  }
  work_ready_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void OrderedPool::WorkerLoop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    work_ready_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
    if (stopping_) return;
    std::shared_ptr<Item> item = pending_.front();
    pending_.pop_front();
    const bool skip = !error_.ok();
    lock.unlock();
    Status status = skip || !item->work ? Status::Ok() : item->work();
    item->work = nullptr;  // what it captured goes now, not at consumption
    lock.lock();
    item->status = std::move(status);
    item->done = true;
    item_done_.notify_all();
  }
}

Status OrderedPool::ConsumeFront(std::unique_lock<std::mutex>* lock, bool wait) {
  while (!order_.empty()) {
    std::shared_ptr<Item> front = order_.front();
    if (!front->done) {
      if (!wait) break;
      item_done_.wait(*lock, [&] { return front->done; });
    }
    order_.pop_front();
    Status status = std::move(front->status);
    if (status.ok() && error_.ok()) {
      lock->unlock();
      status = front->finish ? front->finish() : Status::Ok();
      front->finish = nullptr;
      lock->lock();
    }
    reserved_ -= front->cost;
    if (!status.ok() && error_.ok()) error_ = status;
    if (wait) return error_;  // one item per waited round: the caller rechecks
  }
  return error_;
}

Status OrderedPool::Submit(uint64_t cost, std::function<Status()> work,
                           std::function<Status()> finish) {
  std::unique_lock<std::mutex> lock(mutex_);
  ConsumeFront(&lock, false);
  while (error_.ok() && !order_.empty() && reserved_ + cost > capacity_) {
    ConsumeFront(&lock, true);
  }
  if (!error_.ok()) return error_;
  auto item = std::make_shared<Item>();
  item->cost = cost;
  item->finish = std::move(finish);
  reserved_ += cost;
  peak_ = std::max(peak_, reserved_);
  order_.push_back(item);
  if (work) {
    item->work = std::move(work);
    pending_.push_back(item);
    work_ready_.notify_one();
  } else {
    item->done = true;
  }
  return ConsumeFront(&lock, false);
}

Status OrderedPool::Finish() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!order_.empty()) ConsumeFront(&lock, true);
  return error_;
}

}  // namespace revpatch
