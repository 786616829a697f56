defmodule TinkexNative.Error do
  @moduledoc """
  The error of every failed request, execution or validation.

  Fields:

    * `:type` - what went wrong: `:transport` (connection failed or reset),
      `:timeout` (an HTTP request, or a sample's own `timeout:`), `:http` (a non-success status, see `:status`), `:expired`
      (the future expired; retried with a new attempt), `:request_failed`
      (the server says the request failed; see `:category`), `:decode` (a
      malformed answer), `:stuck` (the watchdog: no progress for
      `progress_timeout_ms`), `:validation` (bad input, nothing was sent),
      `:cancelled` (`TinkexNative.SamplingClient.cancel/2`), `:internal` (a
      caught bug in the native code), `:client_not_running` (the
      `TinkexNative.SamplingClient` called is not running: it was never
      started, it stopped, or it is stopping).
    * `:category` - for `:request_failed`: `:user`, `:server` or `:unknown`;
      `:user` for validation errors; otherwise `nil`.
    * `:status` - the HTTP status when there was an answer.
    * `:message` - for humans. Never contains the API key.
    * `:request_id` - the server's request id when known.
    * `:retryable?` - whether the retry rule considers this error transient.
    * `:retry_after_ms` - for an HTTP error answer, the delay the server
      asked for (`retry-after-ms`, else `retry-after`), when within
      (0, 60] s; otherwise `nil`.

  ## Examples

      iex> e = %TinkexNative.Error{type: :http, status: 503, message: "unavailable", retryable?: true}
      iex> Exception.message(e)
      "unavailable"
      iex> TinkexNative.Error.user_error?(%TinkexNative.Error{type: :http, status: 422, message: "bad"})
      true
  """

  @type type ::
          :transport
          | :timeout
          | :http
          | :expired
          | :request_failed
          | :decode
          | :stuck
          | :validation
          | :cancelled
          | :internal
          | :client_not_running

  @type t :: %__MODULE__{
          type: type(),
          category: :user | :server | :unknown | nil,
          status: non_neg_integer() | nil,
          message: String.t(),
          request_id: String.t() | nil,
          retryable?: boolean(),
          retry_after_ms: non_neg_integer() | nil
        }

  defexception type: :internal,
               category: nil,
               status: nil,
               message: "unknown error",
               request_id: nil,
               retryable?: false,
               retry_after_ms: nil

  @doc """
  The error as the native side reports it: the NIF builds `%TinkexNative.Error{}`
  itself (returned as is); the tuple form is still accepted.

  ## Examples

      iex> TinkexNative.Error.from_native({:tinkex_error, :http, nil, 429, "slow down", "r1", true})
      %TinkexNative.Error{type: :http, status: 429, message: "slow down", request_id: "r1", retryable?: true}
  """
  @spec from_native(t() | tuple()) :: t()
  def from_native(%__MODULE__{} = error), do: error

  def from_native({:tinkex_error, type, category, status, message, request_id, retryable}) do
    %__MODULE__{
      type: type,
      category: category,
      status: status,
      message: message,
      request_id: request_id,
      retryable?: retryable
    }
  end

  @doc """
  A validation error naming the field and the value.

  ## Examples

      iex> TinkexNative.Error.validation(:max_tokens, -1, "a positive integer").message
      "invalid value for :max_tokens: expected a positive integer, got: -1"
  """
  @spec validation(atom() | String.t(), term(), String.t()) :: t()
  def validation(field, value, expected) do
    %__MODULE__{
      type: :validation,
      category: :user,
      message: "invalid value for #{inspect(field)}: expected #{expected}, got: #{inspect(value)}"
    }
  end

  @doc """
  True when the error is the caller's fault (the Python SDK's
  `is_user_error`): a failed request of category `:user`, a validation
  error, or an HTTP 4xx other than 408.

  ## Examples

      iex> TinkexNative.Error.user_error?(%TinkexNative.Error{type: :http, status: 408, message: "later"})
      false
  """
  @spec user_error?(t()) :: boolean()
  def user_error?(%__MODULE__{category: :user}), do: true
  def user_error?(%__MODULE__{type: :validation}), do: true

  def user_error?(%__MODULE__{status: s}) when is_integer(s) and s in 400..499 and s != 408,
    do: true

  def user_error?(%__MODULE__{}), do: false
end
