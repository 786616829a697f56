# Test-only stand-in of tinkex 0.4.0's Tinkex.Error (see README.md): a plain
# struct (not an exception), and new/3 taking :status, :category, :data and
# :retry_after_ms from its options (every other option ignored).
defmodule Tinkex.Error do
  @moduledoc false

  defstruct [:message, :type, :status, :category, :data, :retry_after_ms]

  def new(type, message, opts \\ []) do
    %__MODULE__{
      message: message,
      type: type,
      status: Keyword.get(opts, :status),
      category: Keyword.get(opts, :category),
      data: Keyword.get(opts, :data),
      retry_after_ms: Keyword.get(opts, :retry_after_ms)
    }
  end
end
