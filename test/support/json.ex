defmodule TinkexNative.Test.JSON do
  @moduledoc """
  A small, strict JSON encoder and decoder for tests (no Jason here, and
  OTP 25 has no `:json`).

  ## Mapping

  | JSON | Elixir (decode) | Elixir accepted by encode |
  |---|---|---|
  | object | map with string keys | map with string, atom or integer keys |
  | array | list | list |
  | string | UTF-8 binary | UTF-8 binary, or an atom other than `nil`/`true`/`false` |
  | integer | integer | integer |
  | number with `.` or exponent | float | float (shortest round-trip form) |
  | `true` / `false` / `null` | `true` / `false` / `nil` | same |

  Strings are decoded with every escape, including `\\uXXXX` surrogate
  pairs; the encoder escapes `"`, `\\` and control characters and writes
  other characters as UTF-8. Decoding rejects trailing data, invalid UTF-8,
  lone surrogates and non-JSON literals (`NaN`, `01`, `1.`).

  ## Examples

      iex> TinkexNative.Test.JSON.encode!(%{"a" => [1, 2.5, nil, "é\\n"]})
      ~s({"a":[1,2.5,null,"é\\\\n"]})
      iex> TinkexNative.Test.JSON.decode!(~s({"a": [1, 2.5e1, "\\\\u00e9"]}))
      %{"a" => [1, 25.0, "é"]}
  """

  defmodule Error do
    @moduledoc "Raised by `encode!/1` and `decode!/1`."
    defexception [:message]
  end

  # ------------------------------------------------------------------ encode

  @doc "Encodes `term` as a JSON binary. Returns `{:ok, json}` or `{:error, reason}`."
  @spec encode(term()) :: {:ok, binary()} | {:error, String.t()}
  def encode(term) do
    {:ok, IO.iodata_to_binary(enc(term))}
  rescue
    e in Error -> {:error, e.message}
  end

  @doc "Like `encode/1`, but raises `TinkexNative.Test.JSON.Error`."
  @spec encode!(term()) :: binary()
  def encode!(term) do
    case encode(term) do
      {:ok, json} -> json
      {:error, reason} -> raise Error, message: reason
    end
  end

  defp enc(nil), do: "null"
  defp enc(true), do: "true"
  defp enc(false), do: "false"
  defp enc(atom) when is_atom(atom), do: enc_string(Atom.to_string(atom))
  defp enc(bin) when is_binary(bin), do: enc_string(bin)
  defp enc(int) when is_integer(int), do: Integer.to_string(int)
  defp enc(float) when is_float(float), do: enc_float(float)
  defp enc(list) when is_list(list), do: ["[", Enum.map_intersperse(list, ",", &enc/1), "]"]

  defp enc(%_{} = struct) do
    raise Error, message: "cannot encode struct #{inspect(struct.__struct__)}"
  end

  defp enc(map) when is_map(map) do
    pairs =
      map
      |> Enum.map(fn {k, v} -> {key(k), v} end)
      |> Enum.sort_by(&elem(&1, 0))
      |> Enum.map_intersperse(",", fn {k, v} -> [enc_string(k), ":", enc(v)] end)

    ["{", pairs, "}"]
  end

  defp enc(other), do: raise(Error, message: "cannot encode #{inspect(other)}")

  defp key(k) when is_binary(k), do: k
  defp key(k) when is_atom(k) and k not in [nil, true, false], do: Atom.to_string(k)
  defp key(k) when is_integer(k), do: Integer.to_string(k)
  defp key(k), do: raise(Error, message: "cannot encode map key #{inspect(k)}")

  defp enc_float(f) do
    s = :erlang.float_to_binary(f, [:short])
    # `:short` gives "1.0e-5" / "1.5e20": both valid JSON.
    s
  end

  defp enc_string(bin) do
    unless String.valid?(bin) do
      raise Error, message: "cannot encode invalid UTF-8 #{inspect(bin)}"
    end

    [?", escape(bin, bin, 0, 0, []), ?"]
  end

  # Copies runs of characters that need no escape as sub-binaries.
  defp escape(<<>>, orig, start, len, acc), do: [acc | binary_part(orig, start, len)]

  defp escape(<<c, rest::binary>>, orig, start, len, acc) when c in [?", ?\\] or c < 0x20 do
    acc = [acc, binary_part(orig, start, len), escape_char(c)]
    escape(rest, orig, start + len + 1, 0, acc)
  end

  defp escape(<<_, rest::binary>>, orig, start, len, acc),
    do: escape(rest, orig, start, len + 1, acc)

  defp escape_char(?"), do: "\\\""
  defp escape_char(?\\), do: "\\\\"
  defp escape_char(?\n), do: "\\n"
  defp escape_char(?\r), do: "\\r"
  defp escape_char(?\t), do: "\\t"
  defp escape_char(?\b), do: "\\b"
  defp escape_char(?\f), do: "\\f"

  defp escape_char(c),
    do: ["\\u00", Integer.to_string(div(c, 16), 16), Integer.to_string(rem(c, 16), 16)]

  # ------------------------------------------------------------------ decode

  @doc "Decodes a JSON binary. Returns `{:ok, term}` or `{:error, reason}`."
  @spec decode(binary()) :: {:ok, term()} | {:error, String.t()}
  def decode(json) when is_binary(json) do
    {value, rest} = value(skip_ws(json), json)

    case skip_ws(rest) do
      "" -> {:ok, value}
      _ -> fail(json, rest, "unexpected trailing data")
    end
  catch
    {:json_error, reason} -> {:error, reason}
  end

  @doc "Like `decode/1`, but raises `TinkexNative.Test.JSON.Error`."
  @spec decode!(binary()) :: term()
  def decode!(json) do
    case decode(json) do
      {:ok, v} -> v
      {:error, reason} -> raise Error, message: reason
    end
  end

  defp fail(orig, rest, what) do
    pos = byte_size(orig) - byte_size(rest)
    throw({:json_error, "#{what} at byte #{pos}"})
  end

  defp skip_ws(<<c, rest::binary>>) when c in [?\s, ?\t, ?\n, ?\r], do: skip_ws(rest)
  defp skip_ws(bin), do: bin

  defp value(<<?{, rest::binary>>, o), do: object(skip_ws(rest), o, %{})
  defp value(<<?[, rest::binary>>, o), do: array(skip_ws(rest), o, [])
  defp value(<<?", rest::binary>>, o), do: string(rest, o, [])
  defp value(<<"true", rest::binary>>, _o), do: {true, rest}
  defp value(<<"false", rest::binary>>, _o), do: {false, rest}
  defp value(<<"null", rest::binary>>, _o), do: {nil, rest}
  defp value(<<c, _::binary>> = bin, o) when c == ?- or c in ?0..?9, do: number(bin, o)
  defp value(<<>> = rest, o), do: fail(o, rest, "unexpected end of input")
  defp value(rest, o), do: fail(o, rest, "unexpected character")

  defp object(<<?}, rest::binary>>, _o, acc) when acc == %{}, do: {acc, rest}

  defp object(<<?", rest::binary>>, o, acc) do
    {key, rest} = string(rest, o, [])

    rest =
      case skip_ws(rest) do
        <<?:, rest::binary>> -> skip_ws(rest)
        rest -> fail(o, rest, "expected ':'")
      end

    {val, rest} = value(rest, o)
    acc = Map.put(acc, key, val)

    case skip_ws(rest) do
      <<?,, rest::binary>> -> object(skip_ws(rest), o, acc)
      <<?}, rest::binary>> -> {acc, rest}
      rest -> fail(o, rest, "expected ',' or '}'")
    end
  end

  defp object(rest, o, _acc), do: fail(o, rest, "expected a string key")

  defp array(<<?], rest::binary>>, _o, []), do: {[], rest}

  defp array(bin, o, acc) do
    {val, rest} = value(bin, o)

    case skip_ws(rest) do
      <<?,, rest::binary>> -> array(skip_ws(rest), o, [val | acc])
      <<?], rest::binary>> -> {Enum.reverse([val | acc]), rest}
      rest -> fail(o, rest, "expected ',' or ']'")
    end
  end

  defp string(<<?", rest::binary>>, _o, acc), do: {IO.iodata_to_binary(acc), rest}

  defp string(<<?\\, rest::binary>>, o, acc) do
    case rest do
      <<?", r::binary>> -> string(r, o, [acc, ?"])
      <<?\\, r::binary>> -> string(r, o, [acc, ?\\])
      <<?/, r::binary>> -> string(r, o, [acc, ?/])
      <<?b, r::binary>> -> string(r, o, [acc, ?\b])
      <<?f, r::binary>> -> string(r, o, [acc, ?\f])
      <<?n, r::binary>> -> string(r, o, [acc, ?\n])
      <<?r, r::binary>> -> string(r, o, [acc, ?\r])
      <<?t, r::binary>> -> string(r, o, [acc, ?\t])
      <<?u, h::binary-size(4), r::binary>> -> unicode(hex(h, o, r), r, o, acc)
      _ -> fail(o, rest, "invalid escape")
    end
  end

  defp string(<<c, _::binary>> = rest, o, _acc) when c < 0x20,
    do: fail(o, rest, "control character in string")

  defp string(<<c::utf8, rest::binary>>, o, acc), do: string(rest, o, [acc, <<c::utf8>>])
  defp string(<<>> = rest, o, _acc), do: fail(o, rest, "unterminated string")
  defp string(rest, o, _acc), do: fail(o, rest, "invalid UTF-8 in string")

  defp unicode(hi, <<"\\u", h::binary-size(4), r::binary>>, o, acc) when hi in 0xD800..0xDBFF do
    lo = hex(h, o, r)

    unless lo in 0xDC00..0xDFFF do
      fail(o, r, "invalid low surrogate")
    end

    cp = 0x10000 + Bitwise.bsl(hi - 0xD800, 10) + (lo - 0xDC00)
    string(r, o, [acc, <<cp::utf8>>])
  end

  defp unicode(cp, r, o, _acc) when cp in 0xD800..0xDFFF, do: fail(o, r, "lone surrogate")
  defp unicode(cp, r, o, acc), do: string(r, o, [acc, <<cp::utf8>>])

  defp hex(h, o, r) do
    case Integer.parse(h, 16) do
      {n, ""} -> n
      _ -> fail(o, r, "invalid \\u escape")
    end
  end

  defp number(bin, o) do
    {int_part, rest} = take_int(bin, o)
    {frac, rest} = take_frac(rest, o)
    {exp, rest} = take_exp(rest, o)

    value =
      if frac == "" and exp == "" do
        String.to_integer(int_part)
      else
        frac = if frac == "", do: ".0", else: frac
        :erlang.binary_to_float(int_part <> frac <> exp)
      end

    {value, rest}
  end

  defp take_int(<<?-, rest::binary>>, o) do
    {digits, rest} = take_int(rest, o)
    {"-" <> digits, rest}
  end

  defp take_int(<<?0, d, _::binary>> = rest, o) when d in ?0..?9,
    do: fail(o, rest, "leading zero in number")

  defp take_int(<<d, _::binary>> = bin, _o) when d in ?0..?9, do: digits(bin, "")
  defp take_int(rest, o), do: fail(o, rest, "expected a digit")

  defp take_frac(<<?., d, _::binary>> = bin, _o) when d in ?0..?9 do
    <<?., rest::binary>> = bin
    {ds, rest} = digits(rest, "")
    {"." <> ds, rest}
  end

  defp take_frac(<<?., rest::binary>>, o), do: fail(o, rest, "expected a digit after '.'")
  defp take_frac(rest, _o), do: {"", rest}

  defp take_exp(<<e, rest::binary>>, o) when e in [?e, ?E] do
    {sign, rest} =
      case rest do
        <<?-, r::binary>> -> {"-", r}
        <<?+, r::binary>> -> {"", r}
        r -> {"", r}
      end

    case rest do
      <<d, _::binary>> when d in ?0..?9 ->
        {ds, rest} = digits(rest, "")
        {"e" <> sign <> ds, rest}

      _ ->
        fail(o, rest, "expected a digit in exponent")
    end
  end

  defp take_exp(rest, _o), do: {"", rest}

  defp digits(<<d, rest::binary>>, acc) when d in ?0..?9, do: digits(rest, <<acc::binary, d>>)
  defp digits(rest, acc), do: {acc, rest}
end
