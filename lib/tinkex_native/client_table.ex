defmodule TinkexNative.ClientTable do
  @moduledoc false
  # Owns the ETS table where each sampling client publishes its immutable
  # parts once (native resources, config, ids), so that `sample/4` reads
  # them with one lookup and never calls the client process. It monitors
  # every client: an entry goes when its client dies, however it dies, so
  # a killed client's native resources are freed too.
  use GenServer

  @table __MODULE__

  def start_link(_), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)

  @impl true
  def init(nil) do
    :ets.new(@table, [:named_table, :public, :set, read_concurrency: true])
    {:ok, nil}
  end

  # `handle` is a client's published handle, or `:starting` while a client
  # started with `async_setup: true` sets its session up. A client is
  # watched once, however often it publishes.
  def put(pid, handle) do
    if :ets.insert_new(@table, {pid, handle}),
      do: GenServer.cast(__MODULE__, {:watch, pid}),
      else: :ets.insert(@table, {pid, handle})
  end

  def delete(pid), do: :ets.delete(@table, pid)

  def fetch(pid) do
    case :ets.lookup(@table, pid) do
      [{^pid, handle}] -> {:ok, handle}
      [] -> :error
    end
  end

  @impl true
  def handle_cast({:watch, pid}, state) do
    Process.monitor(pid)
    {:noreply, state}
  end

  @impl true
  def handle_info({:DOWN, _ref, :process, pid, _reason}, state) do
    delete(pid)
    {:noreply, state}
  end
end
