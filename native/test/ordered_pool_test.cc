// The generator's ordered pool: results consumed in submission order, the
// bytes in flight never above the capacity, the first failure stopping
// the rest.
#include "../engine/generator/ordered_pool.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "testing.h"

using namespace revpatch;

TEST(results_are_consumed_in_submission_order_whatever_finishes_first) {
  OrderedPool pool(4, 1000);
  std::vector<int> order;
  for (int i = 0; i < 40; ++i) {
    // Earlier items sleep longer, so later ones finish first.
    ASSERT_OK(pool.Submit(
        10,
        [i] {
          std::this_thread::sleep_for(std::chrono::microseconds((40 - i) * 200));
          return Status::Ok();
        },
        [&order, i] {
          order.push_back(i);
          return Status::Ok();
        }));
    if (i % 7 == 0) {
      // An item with no work takes its place in the order too.
      ASSERT_OK(pool.Submit(0, nullptr, [&order] {
        order.push_back(-1);
        return Status::Ok();
      }));
    }
  }
  ASSERT_OK(pool.Finish());
  std::vector<int> want;
  for (int i = 0; i < 40; ++i) {
    want.push_back(i);
    if (i % 7 == 0) want.push_back(-1);
  }
  EXPECT_TRUE(order == want);
}

TEST(bytes_in_flight_never_pass_the_capacity) {
  OrderedPool pool(4, 100);
  std::atomic<int64_t> in_flight{0};
  std::atomic<int64_t> most{0};
  auto work = [&](int64_t cost) {
    return [&, cost] {
      const int64_t now = in_flight += cost;
      int64_t seen = most.load();
      while (now > seen && !most.compare_exchange_weak(seen, now)) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      in_flight -= cost;
      return Status::Ok();
    };
  };
  for (int i = 0; i < 30; ++i) {
    const int64_t cost = 20 + (i % 4) * 15;  // 20..65: two or three at once
    ASSERT_OK(pool.Submit(static_cast<uint64_t>(cost), work(cost), nullptr));
  }
  // Larger than the capacity: runs, alone.
  ASSERT_OK(pool.Submit(150, work(150), nullptr));
  ASSERT_OK(pool.Submit(30, work(30), nullptr));
  ASSERT_OK(pool.Finish());
  EXPECT_TRUE(most.load() <= 150);
  EXPECT_TRUE(pool.peak_reserved() <= 150);
  EXPECT_TRUE(pool.peak_reserved() >= 40);  // more than one ran at once
}

TEST(the_first_failure_stops_the_rest_and_is_returned) {
  OrderedPool pool(2, 1000);
  std::atomic<int> ran{0};
  int finished = 0;
  for (int i = 0; i < 5; ++i) {
    Status s = pool.Submit(
        1,
        [&ran, i] {
          ++ran;
          return i == 2 ? Status(ErrorCode::kIo, "boom") : Status::Ok();
        },
        [&finished] {
          ++finished;
          return Status::Ok();
        });
    (void)s;
  }
  Status s = pool.Finish();
  EXPECT_CODE(s, ErrorCode::kIo);
  EXPECT_EQ(finished, 2);  // only the items before the failure
  EXPECT_CODE(pool.Submit(1, nullptr, nullptr), ErrorCode::kIo);
  // A failing finish stops the pool the same way (an item without work is
  // consumed at once, by its own Submit).
  OrderedPool other(1, 10);
  EXPECT_CODE(other.Submit(1, nullptr, [] { return Status(ErrorCode::kNoSpace, "full"); }),
              ErrorCode::kNoSpace);
  EXPECT_CODE(other.Submit(1, nullptr, nullptr), ErrorCode::kNoSpace);
  EXPECT_CODE(other.Finish(), ErrorCode::kNoSpace);
}
