// SPDX-License-Identifier: Apache-2.0
// The receiving side's request state machine (see kv_request_tracker.h).
// Calls nothing but Abseil.
#include "lib/kv/kv_request_tracker.h"

#include <algorithm>
#include <iterator>

#include "absl/strings/str_format.h"

namespace flowkv::internal {
namespace {

// The system Abseil has its own string_view: heterogeneous lookups need it.
absl::string_view Key(std::string_view s) { return {s.data(), s.size()}; }

}  // namespace

KvRequestTracker::KvRequestTracker(Options options)
    : options_(std::move(options)) {}

const KvRequestTracker::Tombstone* KvRequestTracker::FindTombstone(
    std::string_view id) const {
  auto it = tombstones_.find(Key(id));
  return it == tombstones_.end() ? nullptr : &it->second;
}

KvRequestTracker::PieceOutcome KvRequestTracker::AddPiece(const KvNotice& piece,
                                                          PeerId peer,
                                                          absl::Time now) {
  PieceOutcome outcome;
  if (FindTombstone(piece.request_id) != nullptr) {
    ++late_notices_;
    outcome.late = true;
    return outcome;
  }
  auto [it, inserted] = active_.try_emplace(piece.request_id);
  Request& request = it->second;
  if (absl::Status s = Apply(piece, peer, request, &outcome.rank_complete);
      !s.ok()) {
    outcome.rank_complete = false;
    outcome.failure = s;
    Fail(piece.request_id, std::move(s));
    return outcome;
  }
  if (request.complete_ranks == request.num_senders) {
    Finish(piece.request_id);
    return outcome;
  }
  request.last_piece = now;
  SetDeadline(piece.request_id, request,
              std::min(request.expect_deadline,
                       now + options_.incomplete_request_timeout));
  return outcome;
}

absl::Status KvRequestTracker::Apply(const KvNotice& p, PeerId peer,
                                     Request& request, bool* rank_complete) {
  const std::string& id = p.request_id;
  if (request.num_senders == 0) {
    request.num_senders = p.num_senders;
  } else if (request.num_senders != p.num_senders) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "request '%s': a piece from sender rank %d names %d senders, earlier "
        "pieces %d",
        id, p.sender_rank, p.num_senders, request.num_senders));
  }
  if (p.layer_end > options_.num_layers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "request '%s': sender rank %d sent layers [%d, %d), the pool has %d",
        id, p.sender_rank, p.layer_begin, p.layer_end, options_.num_layers));
  }
  if (!p.payload.empty()) {
    if (request.payload.empty()) {
      request.payload = p.payload;
    } else if (request.payload != p.payload) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "request '%s': sender rank %d sent a payload (%d bytes) that "
          "differs from an earlier one (%d bytes)",
          id, p.sender_rank, p.payload.size(), request.payload.size()));
    }
  }
  Rank& rank = request.ranks[p.sender_rank];
  if (rank.intervals.empty()) {
    rank.peer = peer;
    rank.intervals.resize(options_.num_layers);
    rank.covered.assign(options_.num_layers, 0);
  }
  if (p.final_chunk) {
    if (rank.total_known && rank.total_tokens != p.token_end) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "request '%s': sender rank %d sent final chunks ending at token %d "
          "and at token %d",
          id, p.sender_rank, rank.total_tokens, p.token_end));
    }
    if (!rank.total_known && rank.max_token_end > p.token_end) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "request '%s': sender rank %d's final chunk ends at token %d, an "
          "earlier chunk at token %d",
          id, p.sender_rank, p.token_end, rank.max_token_end));
    }
  } else if (rank.total_known && p.token_end > rank.total_tokens) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "request '%s': sender rank %d sent tokens [%d, %d) past its final "
        "chunk's end %d",
        id, p.sender_rank, p.token_begin, p.token_end, rank.total_tokens));
  }
  // Refuse any overlap before changing anything.
  for (uint32_t l = p.layer_begin; l < p.layer_end; ++l) {
    const absl::btree_map<uint64_t, uint64_t>& m = rank.intervals[l];
    auto next = m.upper_bound(p.token_begin);
    const bool overlaps_prev =
        next != m.begin() && std::prev(next)->second > p.token_begin;
    const bool overlaps_next = next != m.end() && next->first < p.token_end;
    if (overlaps_prev || overlaps_next) {
      const auto& other = overlaps_prev ? *std::prev(next) : *next;
      return absl::InvalidArgumentError(absl::StrFormat(
          "request '%s': sender rank %d sent layer %d tokens [%d, %d) again "
          "(overlaps tokens [%d, %d) received before)",
          id, p.sender_rank, l, p.token_begin, p.token_end, other.first,
          other.second));
    }
  }
  for (uint32_t l = p.layer_begin; l < p.layer_end; ++l) {
    absl::btree_map<uint64_t, uint64_t>& m = rank.intervals[l];
    uint64_t begin = p.token_begin;
    uint64_t end = p.token_end;
    auto next = m.lower_bound(end);
    if (next != m.end() && next->first == end) {
      end = next->second;
      next = m.erase(next);
    }
    if (next != m.begin() && std::prev(next)->second == begin) {
      auto prev = std::prev(next);
      begin = prev->first;
      m.erase(prev);
    }
    m.emplace(begin, end);
    rank.covered[l] += p.token_end - p.token_begin;
  }
  rank.max_token_end = std::max(rank.max_token_end, p.token_end);
  if (p.final_chunk) {
    rank.total_known = true;
    rank.total_tokens = p.token_end;
  }
  if (!rank.complete && rank.total_known &&
      std::all_of(rank.covered.begin(), rank.covered.end(),
                  [&](uint64_t c) { return c == rank.total_tokens; })) {
    rank.complete = true;
    ++request.complete_ranks;
    *rank_complete = true;
  }
  return absl::OkStatus();
}

bool KvRequestTracker::AddFailure(std::string_view request_id, uint32_t rank,
                                  absl::Status status) {
  if (FindTombstone(request_id) != nullptr) {
    ++late_notices_;
    return false;
  }
  auto it = active_.find(Key(request_id));
  if (it != active_.end()) {
    auto r = it->second.ranks.find(rank);
    if (r != it->second.ranks.end() && r->second.complete) {
      ++late_notices_;
      return false;
    }
  }
  Fail(std::string(request_id), std::move(status));
  return true;
}

void KvRequestTracker::PeerDisconnected(PeerId peer, std::string_view reason) {
  std::vector<std::pair<std::string, uint32_t>> lost;
  for (const auto& [id, request] : active_) {
    for (const auto& [rank_index, rank] : request.ranks) {
      if (rank.peer == peer && !rank.complete) {
        lost.emplace_back(id, rank_index);
        break;
      }
    }
  }
  for (auto& [id, rank] : lost) {
    Fail(id, absl::UnavailableError(absl::StrFormat(
                 "request '%s': peer %d (sender rank %d) disconnected before "
                 "its last piece: %s",
                 id, peer, rank, reason)));
  }
}

void KvRequestTracker::Expect(std::string_view request_id,
                              absl::Time deadline) {
  auto tomb = tombstones_.find(Key(request_id));
  if (tomb != tombstones_.end()) {
    if (!tomb->second.reported) return;  // a result still to be polled
    tombstones_.erase(tomb);
  }
  const std::string id(request_id);
  Request& request = active_[id];
  request.expect_deadline = deadline;
  absl::Time effective = deadline;
  if (request.last_piece != absl::InfinitePast()) {
    effective = std::min(
        effective, request.last_piece + options_.incomplete_request_timeout);
  }
  SetDeadline(id, request, effective);
}

void KvRequestTracker::Forget(std::string_view request_id) {
  const std::string id(request_id);
  if (auto it = active_.find(id); it != active_.end()) {
    deadlines_.erase({it->second.deadline, id});
    active_.erase(it);
  }
  std::erase_if(finished_,
                [&](const KvFinished& f) { return f.request_id == id; });
  std::erase_if(failed_, [&](const KvFailed& f) { return f.request_id == id; });
  Remember(id, Outcome::kForgotten);
  if (auto it = tombstones_.find(id); it != tombstones_.end()) {
    it->second.reported = true;
  }
}

void KvRequestTracker::ApplyDeadlines(absl::Time now) {
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    const std::string id = deadlines_.begin()->second;
    const Request& request = active_.at(id);
    std::string why =
        request.expect_deadline <= now
            ? absl::StrFormat(
                  "not finished by its Expect deadline (%s ago)",
                  absl::FormatDuration(now - request.expect_deadline))
            : absl::StrFormat(
                  "no piece for %s",
                  absl::FormatDuration(options_.incomplete_request_timeout));
    const std::string progress =
        request.num_senders == 0
            ? std::string("no piece arrived")
            : absl::StrFormat("%d of %d sender ranks complete, %d heard from",
                              request.complete_ranks, request.num_senders,
                              request.ranks.size());
    Fail(id, absl::DeadlineExceededError(
                 absl::StrFormat("request '%s' %s; %s", id, why, progress)));
  }
}

absl::Time KvRequestTracker::NextDeadline() const {
  return deadlines_.empty() ? absl::InfiniteFuture()
                            : deadlines_.begin()->first;
}

void KvRequestTracker::TakeResults(std::vector<KvFinished>* finished,
                                   std::vector<KvFailed>* failed) {
  for (KvFinished& f : finished_) {
    if (auto it = tombstones_.find(f.request_id); it != tombstones_.end()) {
      it->second.reported = true;
    }
    finished->push_back(std::move(f));
  }
  for (KvFailed& f : failed_) {
    if (auto it = tombstones_.find(f.request_id); it != tombstones_.end()) {
      it->second.reported = true;
    }
    failed->push_back(std::move(f));
  }
  finished_.clear();
  failed_.clear();
}

uint32_t KvRequestTracker::LayersArrived(std::string_view request_id) const {
  if (const Tombstone* t = FindTombstone(request_id); t != nullptr) {
    return t->outcome == Outcome::kFinished ? options_.num_layers : 0;
  }
  auto it = active_.find(Key(request_id));
  if (it == active_.end()) return 0;
  const Request& request = it->second;
  if (request.num_senders == 0 || request.ranks.size() < request.num_senders) {
    return 0;
  }
  for (const auto& [index, rank] : request.ranks) {
    if (!rank.total_known) return 0;
  }
  for (uint32_t l = 0; l < options_.num_layers; ++l) {
    for (const auto& [index, rank] : request.ranks) {
      if (rank.covered[l] != rank.total_tokens) return l;
    }
  }
  return options_.num_layers;
}

void KvRequestTracker::SetDeadline(const std::string& id, Request& request,
                                   absl::Time deadline) {
  if (deadline == request.deadline) return;
  if (request.deadline != absl::InfiniteFuture()) {
    deadlines_.erase({request.deadline, id});
  }
  request.deadline = deadline;
  if (deadline != absl::InfiniteFuture()) deadlines_.emplace(deadline, id);
}

void KvRequestTracker::Finish(const std::string& id) {
  auto it = active_.find(id);
  deadlines_.erase({it->second.deadline, id});
  finished_.push_back({id, std::move(it->second.payload)});
  active_.erase(it);
  Remember(id, Outcome::kFinished);
}

void KvRequestTracker::Fail(const std::string& id, absl::Status status) {
  if (auto it = active_.find(id); it != active_.end()) {
    deadlines_.erase({it->second.deadline, id});
    active_.erase(it);
  }
  if (options_.log) options_.log(LogSeverity::kWarning, status.ToString());
  failed_.push_back({id, std::move(status)});
  Remember(id, Outcome::kFailed);
}

void KvRequestTracker::Remember(const std::string& id, Outcome outcome) {
  if (options_.max_tombstones == 0) return;
  const uint64_t seq = next_seq_++;
  tombstones_[id] = Tombstone{outcome, false, seq};
  tombstone_order_.emplace_back(id, seq);
  while (tombstones_.size() > options_.max_tombstones ||
         tombstone_order_.size() > 2 * options_.max_tombstones) {
    auto& [old_id, old_seq] = tombstone_order_.front();
    auto it = tombstones_.find(old_id);
    if (it != tombstones_.end() && it->second.seq == old_seq) {
      tombstones_.erase(it);
    }
    tombstone_order_.pop_front();
  }
}

}  // namespace flowkv::internal
