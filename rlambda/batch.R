# Batch scoring of CSV chunks, a whole column at a time (rlambda/batch.py
# drives it through rsession.py). Each call reads one chunk file with
# data.table::fread, validates every predictor column with vectorised checks
# that still name each bad row and its reason, scores the good rows with the
# model's own scorer (serve.R's closure: the numbers the API answers), and
# appends the results and the errors with data.table::fwrite.
#
# Every cell is read as text, so the input row is echoed exactly as it came
# (no "4.00" -> "4", no "007" -> "7"); the validation rules are the API's
# (rlambda/prototype.py) and tests/test_batch_csv.py and test_model_kinds.py
# check that both agree on the same cells, message for message (a column
# parsed cell by cell, and one parsed once per distinct value).

if (!requireNamespace("data.table", quietly = TRUE)) {
  stop("[rlambda] batch scoring needs R package 'data.table', which is not installed in this R library",
       call. = FALSE)
}

# Cells a spreadsheet would run as a formula (OWASP "CSV injection"): they
# start with one of these characters. A cell that is a plain number (-1.5)
# is left alone: it is data, and Excel reads it as a number.
rlb_triggers <- c("=", "+", "-", "@", "\t", "\r")
rlb_number <- "^\\s*[+-]?(?:\\d+\\.?\\d*|\\.\\d+)(?:[eE][+-]?\\d+)?\\s*$"
# prototype.py's NUMBER_TEXT and INTEGER_TEXT: numbers as text that the API
# accepts (at most 200 integer digits and a 2-digit exponent: always a finite
# double; whole numbers at most 9 digits), around optional white space.
rlb_number_text <- "^\\s*[+-]?(?:0*\\d{1,200}(?:\\.\\d*)?|\\.\\d+)(?:[eE][+-]?0*\\d{1,2})?\\s*$"
rlb_integer_text <- "^\\s*[+-]?0*\\d{1,9}\\s*$"

rlb_neutralise <- function(x) {
  first <- substr(x, 1L, 1L)
  hit <- first %in% rlb_triggers
  if (any(hit)) {
    hit[hit] <- !grepl(rlb_number, x[hit], perl = TRUE)
    x[hit] <- paste0("'", x[hit])
  }
  x
}

# The white space around a cell that the API ignores (prototype.SPACE):
# ASCII's six, which as.numeric() and PCRE's \s skip too.
rlb_space <- "[ \t\n\v\f\r]"

# What Python's repr escapes (str.isprintable() is false): Unicode's
# separators and "other" characters but the plain space. Escaped as repr does.
rlb_unprintable <- "(?!\\x20)[\\p{Z}\\p{C}]"
rlb_repr_char <- function(ch) {
  cp <- utf8ToInt(ch)
  if (cp == 9L) "\\t" else if (cp == 10L) "\\n" else if (cp == 13L) "\\r"
  else if (cp < 256L) sprintf("\\x%02x", cp) else if (cp < 65536L) sprintf("\\u%04x", cp) else sprintf("\\U%08x", cp)
}

# How prototype.py's _shown() renders a text value: Python's repr, cut to 40.
rlb_shown <- function(x) {
  esc <- gsub("\\", "\\\\", x, fixed = TRUE)
  odd <- grepl(rlb_unprintable, esc, perl = TRUE)
  if (any(odd)) {
    esc[odd] <- vapply(esc[odd], function(s) {
      at <- gregexpr(rlb_unprintable, s, perl = TRUE)
      regmatches(s, at) <- list(vapply(regmatches(s, at)[[1L]], rlb_repr_char, ""))
      s
    }, "", USE.NAMES = FALSE)
  }
  dq <- grepl("'", x, fixed = TRUE) & !grepl("\"", x, fixed = TRUE)
  sq <- !dq & grepl("'", x, fixed = TRUE)
  esc[sq] <- gsub("'", "\\'", esc[sq], fixed = TRUE)
  out <- ifelse(dq, paste0("\"", esc, "\""), paste0("'", esc, "'"))
  long <- nchar(out) > 40L
  out[long] <- paste0(substr(out[long], 1L, 37L), "...")
  out
}

rlb_expected <- function(type, levels) {
  if (length(levels)) return(paste0("one of ", paste(levels, collapse = ", ")))
  switch(type, logical = "true or false", integer = "a whole number", character = "a string",
         "a finite number")
}

# A factor, or text with a fixed set of values: cells are matched to the levels.
rlb_coded <- function(type, levels) type == "factor" || (type == "character" && length(levels) > 0L)

# The values of one predictor column, typed for the scorer, with NA where
# the API refuses the cell (cells are checked on text, as prototype.py does).
rlb_typed <- function(s, type, levels) {
  if (rlb_coded(type, levels)) {
    # data.table's chmatch is match() for text (exact matches; strings in
    # other encodings compared as UTF-8), about twice as fast on a chunk
    code <- data.table::chmatch(s, levels)
    miss <- which(is.na(code))
    if (length(miss)) code[miss] <- data.table::chmatch(trimws(s[miss], whitespace = rlb_space), levels)
    return(if (type == "factor") code else levels[code])
  }
  if (type == "logical") {
    t <- tolower(trimws(s, whitespace = rlb_space))
    value <- rep(NA, length(s))
    value[t %in% c("true", "t", "yes", "1")] <- TRUE
    value[t %in% c("false", "f", "no", "0")] <- FALSE
    return(value)
  }
  if (type == "integer") {
    # as prototype.parse_integer: text is a whole number of at most 9 digits
    # (always within R's integers), checked before anything else
    value <- rep(NA_integer_, length(s))
    ok <- grepl(rlb_integer_text, s, perl = TRUE)
    value[ok] <- as.integer(as.numeric(s[ok]))
    return(value)
  }
  # Numbers as prototype.py's _NUMBER accepts them. as.numeric() is the fast
  # path; it also takes what the API refuses as text: hexadecimal ("0x1A"), a
  # bare or 3-digit exponent ("1e", "1e400"), more than 200 digits, and
  # trailing Unicode white space in a UTF-8 locale ("800" and an em space).
  # Only cells with an x or an e, a character outside ASCII, or longer than 200
  # characters, meet the pattern itself.
  x <- suppressWarnings(as.numeric(s))
  odd <- grepl("[xXeE]|[^\\x01-\\x7f]", s, perl = TRUE) | nchar(s) > 200L
  if (any(odd)) x[odd][!grepl(rlb_number_text, s[odd], perl = TRUE)] <- NA_real_
  x[!is.finite(x)] <- NA_real_
  x
}

# A column's distinct values when they are few (a rank, a score, a price with
# two decimals): each is then parsed once, and `at` spreads the results
# (values[at] is the column). NULL when they are many (an id, a
# measurement), judged on the first cells. Those first cells usually hold
# every value: the column is matched against them, and only the cells they
# miss are hashed by unique(); 0.9 ms on a chunk's 116,000 cells, where
# unique() of the column and a match against it took 1.7 ms.
rlb_distinct <- function(s) {
  n <- length(s)
  if (n < 4096L) return(NULL)
  u <- unique(s[seq_len(2048L)])
  if (length(u) > 512L) return(NULL)
  at <- data.table::chmatch(s, u)
  miss <- which(is.na(at))
  if (length(miss)) {
    more <- unique(s[miss])  # none of them in u
    if (length(u) + length(more) > n %/% 4L) return(NULL)
    at[miss] <- length(u) + data.table::chmatch(s[miss], more)
    u <- c(u, more)
  }
  list(values = u, at = at)
}

# One predictor column (text) -> list(value = typed vector for the scorer,
# rows = the rows the API would refuse, why = the reason for each of them).
rlb_parse <- function(s, type, levels) {
  if (type == "character" && !length(levels)) return(list(value = s, rows = integer(0), why = character(0)))
  coded <- rlb_coded(type, levels)
  u <- if (coded) NULL else rlb_distinct(s)  # matching the levels is one pass already
  value <- if (is.null(u)) rlb_typed(s, type, levels) else rlb_typed(u$values, type, levels)[u$at]
  rows <- which(is.na(value))
  if (!length(rows)) return(list(value = value, rows = rows, why = character(0)))
  b <- s[rows]
  why <- if (coded) {
    paste0("must be ", rlb_expected(type, levels), ", got ", rlb_shown(b))
  } else if (type == "logical") {
    paste0("must be true or false, got ", rlb_shown(b))
  } else if (type == "integer") {
    paste0("must be a whole number (at most 9 digits as text), got ", rlb_shown(b))
  } else {
    # valid text, but past a double's range
    ifelse(grepl(rlb_number, b, perl = TRUE),
           "is too large for a number as text (at most a 2-digit exponent); send a JSON number",
           paste0("must be a finite number, got ", rlb_shown(b)))
  }
  list(value = value, rows = rows, why = why)
}

# The output columns for the scored rows, in the order the API names them.
rlb_results <- function(p, n, kind, classes, threshold) {
  if (kind == "binary") {
    p[!is.finite(p)] <- NA_real_
    # as Python's str(p > threshold): NaN is not above it
    return(list(result = c("False", "True")[(!is.na(p) & p > threshold) + 1L], probability = p))
  }
  if (kind == "multiclass") {
    k <- length(classes)
    m <- matrix(p, nrow = n)
    pick <- m[, k + 1L]
    ok <- is.finite(pick) & pick >= 1 & pick <= k
    out <- list(class = ifelse(ok, classes[ifelse(ok, pick, 1)], NA_character_))
    for (j in seq_len(k)) {
      v <- m[, j]
      v[!is.finite(v)] <- NA_real_
      out[[paste0("probabilities_", classes[[j]])]] <- v
    }
    return(out)
  }
  if (kind == "label") {
    # 1-based indices into classes; NA (written empty) when R could not decide
    ok <- is.finite(p) & p >= 1 & p <= length(classes)
    out <- rep(NA_character_, n)
    out[ok] <- classes[p[ok]]
    return(list(class = out))
  }
  p[!is.finite(p)] <- NA_real_
  list(prediction = p)
}

rlb_result_names <- function(kind, classes) {
  switch(kind, binary = c("result", "probability"),
         multiclass = c("class", paste0("probabilities_", classes)), label = "class", "prediction")
}

# Write the header rows of the output and errors files (truncating them).
rl_batch_begin <- function(model, header, out_path, err_path) {
  d <- model$description
  kind <- d$kind[[1L]]
  names_out <- rlb_neutralise(c(header, rlb_result_names(kind, as.character(d$classes)), "model_version"))
  empty <- function(nm) {
    x <- rep(list(character(0)), length(nm))
    names(x) <- paste0("V", seq_along(nm))
    data.table::setDT(x)
    x
  }
  data.table::fwrite(data.table::setnames(empty(names_out), names_out), out_path)
  names_err <- rlb_neutralise(c("row", "reason", header))
  data.table::fwrite(data.table::setnames(empty(names_err), names_err), err_path)
  TRUE
}

# Score one chunk file (no header line). Returns list(rows, scored, failed),
# or list(fallback = message) when fread could not read the chunk cleanly
# (a row of the wrong width, odd quoting): batch.py then re-reads it with
# Python's csv module, names the ragged rows, and sends the rest back here.
rl_batch_chunk <- function(model, path, header, first_row, rows, ragged, unescape, expected,
                           out_path, err_path, threshold, version, triggers = TRUE) {
  width <- length(header)
  # Warnings are collected, not thrown: fread must finish (a read cut short
  # by a handler leaves its state behind for the next call).
  warned <- character(0)
  d <- tryCatch(
    withCallingHandlers(
      data.table::fread(path, sep = ",", quote = "\"", header = FALSE, colClasses = "character",
                        na.strings = NULL, strip.white = FALSE, skip = 0L, blank.lines.skip = TRUE,
                        fill = FALSE, showProgress = FALSE, encoding = "UTF-8", nThread = 1L,
                        col.names = paste0("V", seq_len(width))),
      warning = function(w) {
        warned <<- c(warned, conditionMessage(w))
        invokeRestart("muffleWarning")
      }
    ),
    error = function(e) conditionMessage(e)
  )
  if (is.character(d)) return(list(fallback = d))
  if (length(warned)) return(list(fallback = warned[[1L]]))
  n <- nrow(d)
  # fread may skip lines it judges irregular without a warning; the count
  # of records Python expects catches that.
  if (n != expected) return(list(fallback = sprintf("fread read %d rows of %d", n, expected)))
  if (n == 0L) return(list(rows = 0L, scored = 0L, failed = 0L))
  if (ncol(d) != width) return(list(fallback = sprintf("%d columns, header has %d", ncol(d), width)))
  if (unescape) {
    # fread keeps a quoted cell's doubled quotes ("a ""b""" -> a ""b""); RFC 4180 says a "b"
    for (j in seq_len(width)) {
      x <- d[[j]]
      q <- grep("\"\"", x, fixed = TRUE)
      if (length(q)) data.table::set(d, q, j, gsub("\"\"", "\"", x[q], fixed = TRUE))
    }
  }
  row_no <- if (is.null(rows)) first_row + seq_len(n) - 1L else rows
  if (length(row_no) != n) return(list(fallback = sprintf("%d rows, expected %d", n, length(row_no))))

  desc <- model$description
  nm <- desc$names; types <- desc$types; lv <- desc$levels
  kind <- desc$kind[[1L]]; classes <- as.character(desc$classes)
  # reason: NA for a row without a problem; made at the first problem (a
  # clean chunk needs no such vector).
  reason <- NULL
  ragged_row <- NULL
  if (!is.null(ragged)) {
    reason <- ifelse(nzchar(ragged), ragged, NA_character_)
    ragged_row <- !is.na(reason)  # a row of the wrong width is reported as such, and only so
  }
  add <- function(at, msg) {
    if (!is.null(ragged_row)) {
      keep <- !ragged_row[at]
      at <- at[keep]
      msg <- msg[keep]
    }
    if (!length(at)) return(invisible())
    if (is.null(reason)) reason <<- rep(NA_character_, n)
    now <- reason[at]
    reason[at] <<- ifelse(is.na(now), msg, paste(now, msg, sep = "; "))
  }
  cols <- vector("list", length(nm))
  for (i in seq_along(nm)) {
    j <- match(nm[[i]], header)
    if (is.na(j)) {
      add(seq_len(n), rep(paste0(nm[[i]], " is required: send ", rlb_expected(types[[i]], lv[[i]])), n))
      next
    }
    parsed <- rlb_parse(d[[j]], types[[i]], lv[[i]])
    cols[[i]] <- parsed$value
    if (length(parsed$rows)) add(parsed$rows, paste(nm[[i]], parsed$why))
  }
  if (is.null(reason)) {
    good <- seq_len(n)
    bad <- integer(0)
  } else {
    good <- which(is.na(reason))
    bad <- which(!is.na(reason))
  }

  if (length(good)) {
    if (length(good) < n) cols <- lapply(cols, function(x) x[good])
    p <- model$scorer(cols, length(good))
    res <- rlb_results(p, length(good), kind, classes, threshold)
    # a plain list of columns: fwrite writes it as it is
    out <- if (length(good) < n) lapply(d, function(x) x[good]) else as.list(d)
    if (triggers) {
      # Which echoed columns can hold a formula: any column but a numeric
      # predictor's, whose good values are numbers by now. (batch.py tells
      # whether the chunk holds a trigger character at all.)
      numeric_cols <- match(nm[types %in% c("numeric", "integer")], header)
      for (j in setdiff(seq_len(width), numeric_cols)) out[[j]] <- rlb_neutralise(out[[j]])
    }
    out <- c(out, res)
    if (grepl("^[\\x20\\x21\\x23-\\x2b\\x2d-\\x7e]+$", version, perl = TRUE)) {
      # a version of printable ASCII without a comma or a quote (fwrite would
      # write it as it is) ends every line: no column of n copies
      data.table::fwrite(out, out_path, append = TRUE, col.names = FALSE, na = "", nThread = 1L,
                         eol = paste0(",", version, "\n"))
    } else {
      out$model_version <- rep(version, length(good))
      data.table::fwrite(out, out_path, append = TRUE, col.names = FALSE, na = "", nThread = 1L)
    }
  }
  if (length(bad)) {
    err <- c(list(row = row_no[bad], reason = rlb_neutralise(reason[bad])),
             lapply(d, function(x) rlb_neutralise(x[bad])))
    data.table::fwrite(err, err_path, append = TRUE, col.names = FALSE, na = "", nThread = 1L)
  }
  list(rows = n, scored = length(good), failed = length(bad))
}

# The refusal of a whole file (empty, not UTF-8): one row of the errors file.
rl_batch_refuse <- function(err_path, row, reason) {
  err <- data.table::data.table(row = row, reason = rlb_neutralise(reason))
  data.table::fwrite(err, err_path, append = TRUE, col.names = FALSE, na = "", nThread = 1L)
  TRUE
}
