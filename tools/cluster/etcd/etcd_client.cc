// SPDX-License-Identifier: Apache-2.0
// EtcdClient's calls: one HTTP POST per call through libcurl, JSON bodies
// written here and replies read with json_reader.h.
#include "tools/cluster/etcd/etcd_client.h"

#include <cmath>
#include <curl/curl.h>
#include <utility>

#include "absl/base/call_once.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/cluster/etcd/json_reader.h"

namespace flowkv::cluster {

namespace {

absl::once_flag curl_once;

struct ReplyBuffer {
  std::string text;
  size_t limit = 0;
  bool overflow = false;
};

size_t OnReplyBytes(char* data, size_t size, size_t count, void* user) {
  auto* reply = static_cast<ReplyBuffer*>(user);
  const size_t n = size * count;
  if (reply->text.size() + n > reply->limit) {
    reply->overflow = true;
    return 0;  // makes curl stop with CURLE_WRITE_ERROR
  }
  reply->text.append(data, n);
  return n;
}

std::string B64(std::string_view bytes) {
  return absl::Base64Escape(absl::string_view(bytes.data(), bytes.size()));
}

absl::StatusOr<std::string> FromB64(const JsonValue& v) {
  if (v.is_null()) return std::string();
  absl::StatusOr<std::string> text = v.AsString();
  if (!text.ok()) return text.status();
  std::string out;
  if (!absl::Base64Unescape(*text, &out)) {
    return absl::InvalidArgumentError("etcd: a key or value is not base64");
  }
  return out;
}

// The gateway writes errors as {"error": ..., "code": ..., "message": ...}.
absl::Status ErrorFromReply(long http_code, const std::string& text) {
  std::string message = text.substr(0, 200);
  if (absl::StatusOr<JsonValue> v = ParseJson(text); v.ok()) {
    if (absl::StatusOr<std::string> m = v->Get("message").AsString(); m.ok())
      message = *m;
  }
  if (absl::StrContains(message, "requested lease not found")) {
    return absl::NotFoundError(absl::StrCat("etcd: ", message));
  }
  return absl::UnavailableError(
      absl::StrFormat("etcd: HTTP %d: %s", http_code, message));
}

}  // namespace

std::string PrefixRangeEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() =
          static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return end;
}

absl::StatusOr<std::unique_ptr<EtcdClient>> EtcdClient::Create(
    const EtcdOptions& options) {
  if (!absl::StartsWith(options.endpoint, "http://") ||
      options.endpoint.size() <= 7) {
    return absl::InvalidArgumentError(
        absl::StrCat("etcd endpoint must be http://host:port, got '",
                     options.endpoint, "'"));
  }
  if (options.request_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("etcd request_timeout must be positive");
  }
  absl::call_once(curl_once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  return std::unique_ptr<EtcdClient>(new EtcdClient(options));
}

absl::StatusOr<std::string> EtcdClient::Call(std::string_view path,
                                             const std::string& body) {
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(),
                                              curl_easy_cleanup);
  if (curl == nullptr)
    return absl::ResourceExhaustedError("etcd: curl_easy_init failed");
  const std::string url = options_.endpoint + std::string(path);
  ReplyBuffer reply;
  reply.limit = options_.max_reply_bytes;
  curl_slist* headers =
      curl_slist_append(nullptr, "Content-Type: application/json");
  std::unique_ptr<curl_slist, void (*)(curl_slist*)> header_list(
      headers, curl_slist_free_all);
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  curl_easy_setopt(
      c, CURLOPT_TIMEOUT_MS,
      static_cast<long>(absl::ToInt64Milliseconds(options_.request_timeout)));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, OnReplyBytes);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply);
  const CURLcode rc = curl_easy_perform(c);
  if (reply.overflow) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "etcd: reply to %s is larger than %d bytes", path, reply.limit));
  }
  if (rc == CURLE_OPERATION_TIMEDOUT) {
    return absl::DeadlineExceededError(
        absl::StrFormat("etcd: %s took longer than %s", url,
                        absl::FormatDuration(options_.request_timeout)));
  }
  if (rc != CURLE_OK) {
    return absl::UnavailableError(
        absl::StrCat("etcd: ", url, ": ", curl_easy_strerror(rc)));
  }
  long http_code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &http_code);
  if (http_code != 200) return ErrorFromReply(http_code, reply.text);
  return std::move(reply.text);
}

absl::StatusOr<int64_t> EtcdClient::GrantLease(absl::Duration ttl) {
  const int64_t seconds =
      std::max<int64_t>(1, std::ceil(absl::ToDoubleSeconds(ttl)));
  absl::StatusOr<std::string> text =
      Call("/v3/lease/grant", absl::StrFormat(R"({"TTL":%d})", seconds));
  if (!text.ok()) return text.status();
  absl::StatusOr<JsonValue> v = ParseJson(*text);
  if (!v.ok()) return v.status();
  absl::StatusOr<int64_t> id = v->Get("ID").AsInt();
  if (!id.ok()) return id.status();
  if (*id == 0)
    return absl::InvalidArgumentError("etcd: lease grant returned no ID");
  return *id;
}

absl::StatusOr<absl::Duration> EtcdClient::KeepAlive(int64_t lease) {
  // A streaming call in gRPC; through the gateway one request body gives one
  // reply object, {"result": {...}}.
  absl::StatusOr<std::string> text =
      Call("/v3/lease/keepalive", absl::StrFormat(R"({"ID":"%d"})", lease));
  if (!text.ok()) return text.status();
  const size_t line_end = text->find('\n');
  absl::StatusOr<JsonValue> v =
      ParseJson(std::string_view(*text).substr(0, line_end));
  if (!v.ok()) return v.status();
  const JsonValue& result = v->Get("result");
  if (result.is_null()) return ErrorFromReply(200, *text);
  absl::StatusOr<int64_t> ttl = result.Get("TTL").AsInt();
  if (!ttl.ok()) return ttl.status();
  if (*ttl <= 0)
    return absl::NotFoundError(
        absl::StrFormat("etcd: lease %d expired", lease));
  return absl::Seconds(*ttl);
}

absl::Status EtcdClient::RevokeLease(int64_t lease) {
  return Call("/v3/lease/revoke", absl::StrFormat(R"({"ID":"%d"})", lease))
      .status();
}

absl::Status EtcdClient::Put(std::string_view key, std::string_view value,
                             int64_t lease) {
  if (key.empty()) return absl::InvalidArgumentError("etcd: empty key");
  std::string body =
      absl::StrFormat(R"({"key":"%s","value":"%s")", B64(key), B64(value));
  if (lease != 0) absl::StrAppendFormat(&body, R"(,"lease":"%d")", lease);
  body += "}";
  return Call("/v3/kv/put", body).status();
}

absl::StatusOr<std::vector<EtcdKeyValue>> EtcdClient::Range(
    std::string_view key, std::string_view range_end) {
  std::string body = absl::StrFormat(R"({"key":"%s")", B64(key));
  if (!range_end.empty())
    absl::StrAppendFormat(&body, R"(,"range_end":"%s")", B64(range_end));
  body += "}";
  absl::StatusOr<std::string> text = Call("/v3/kv/range", body);
  if (!text.ok()) return text.status();
  absl::StatusOr<JsonValue> v = ParseJson(*text);
  if (!v.ok()) return v.status();
  std::vector<EtcdKeyValue> out;
  for (const JsonValue& item : v->Get("kvs").Items()) {
    EtcdKeyValue kv;
    absl::StatusOr<std::string> k = FromB64(item.Get("key"));
    absl::StatusOr<std::string> val = FromB64(item.Get("value"));
    absl::StatusOr<int64_t> rev = item.Get("mod_revision").AsInt();
    absl::StatusOr<int64_t> lease = item.Get("lease").AsInt();
    if (!k.ok()) return k.status();
    if (!val.ok()) return val.status();
    if (!rev.ok()) return rev.status();
    if (!lease.ok()) return lease.status();
    kv.key = std::move(*k);
    kv.value = std::move(*val);
    kv.mod_revision = *rev;
    kv.lease = *lease;
    out.push_back(std::move(kv));
  }
  return out;
}

absl::StatusOr<std::optional<EtcdKeyValue>> EtcdClient::Get(
    std::string_view key) {
  if (key.empty()) return absl::InvalidArgumentError("etcd: empty key");
  absl::StatusOr<std::vector<EtcdKeyValue>> kvs = Range(key, "");
  if (!kvs.ok()) return kvs.status();
  if (kvs->empty()) return std::optional<EtcdKeyValue>();
  return std::optional<EtcdKeyValue>(std::move(kvs->front()));
}

absl::StatusOr<std::vector<EtcdKeyValue>> EtcdClient::GetPrefix(
    std::string_view prefix) {
  if (prefix.empty()) return absl::InvalidArgumentError("etcd: empty prefix");
  return Range(prefix, PrefixRangeEnd(prefix));
}

absl::StatusOr<int64_t> EtcdClient::Delete(std::string_view key) {
  if (key.empty()) return absl::InvalidArgumentError("etcd: empty key");
  absl::StatusOr<std::string> text =
      Call("/v3/kv/deleterange", absl::StrFormat(R"({"key":"%s"})", B64(key)));
  if (!text.ok()) return text.status();
  absl::StatusOr<JsonValue> v = ParseJson(*text);
  if (!v.ok()) return v.status();
  return v->Get("deleted").AsInt();
}

}  // namespace flowkv::cluster
