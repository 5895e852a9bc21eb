"""The routing service: decide (pure core), call the provider (adapter), settle the actual cost.

Failover lives here. When a call fails with a timeout, a connection error, 429, 5xx or an
unreadable key, the ladder runs again over the models not yet tried (and not skipped by their
breaker), with what is left of the deadline as the latency limit. A 429 whose ``Retry-After`` fits
in what is left of the deadline is waited out and the same model tried once more first: the
cheapest model that meets the constraints is worth a short wait. 400, 401, 403 and 404 end the
request without failover (a 401 from OpenAI first re-reads the key once, in the provider).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterator, Mapping

from costroute.breaker import CircuitBreakers
from costroute.core.estimate import (
    cost_usd,
    estimate_prompt_tokens,
    input_alone_exceeds,
    output_token_ceiling,
)
from costroute.core.registry import Model, Registry
from costroute.core.requests import InvalidRequest, RouteRequest
from costroute.core.selection import (
    Decision,
    SelectionRequest,
    UnknownProviderError,
    format_usd,
    select_model,
    sentence,
)
from costroute.providers.base import (
    AUTH,
    BAD_REQUEST,
    FORBIDDEN,
    KEY_UNAVAILABLE,
    NOT_FOUND,
    RATE_LIMITED,
    TIMEOUT,
    Completion,
    Provider,
    ProviderCall,
    ProviderError,
    StreamPiece,
)

# Never plan to use the last moments before the platform's own limit.
DEADLINE_SAFETY_MARGIN_SECONDS = 0.5


class RoutingFailed(Exception):
    """A request that could not be served; carries the HTTP status, error type and attempts."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        attempts: tuple["Attempt", ...] = (),
        trace: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.attempts = attempts
        self.trace = trace


@dataclass(frozen=True)
class Attempt:
    """One provider call: which model, how it ended, how long it took."""

    model_id: str
    outcome: str  # "ok" or a ProviderError kind
    duration_ms: float
    status: int | None = None
    message: str | None = None


@dataclass(frozen=True)
class CallPlan:
    """The output cap sent with a call and whether the cost ceiling set it."""

    max_tokens: int | None
    ceiling_applied: bool


@dataclass
class RouteResult:
    """Everything a response needs: the decision, the call, its usage and its cost."""

    request: RouteRequest
    decision: Decision
    model: Model
    plan: CallPlan
    trace: list[str]
    attempts: list[Attempt] = field(default_factory=list)
    completion: Completion | None = None
    provider_ms: float = 0.0
    # The models this request chose from, read once: failover uses the same registry as the decision.
    pool: tuple[Model, ...] = ()

    @property
    def actual_cost_usd(self) -> Decimal | None:
        """The cost from the provider's reported usage, exact."""
        if self.completion is None:
            return None
        return cost_usd(self.model, self.completion.prompt_tokens, self.completion.completion_tokens)


@dataclass
class StreamedRoute:
    """A route whose answer arrives in pieces; ``result.completion`` is set when they end."""

    result: RouteResult
    pieces: Iterator[StreamPiece]


class RouterService:
    """Routes requests over the registry with the configured providers."""

    def __init__(
        self,
        registry: Callable[[], Registry],
        providers: Mapping[str, Provider],
        breakers: CircuitBreakers,
        deadline_seconds: float,
        provider_timeout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._registry = registry
        self._providers = providers
        self._breakers = breakers
        self._deadline_seconds = deadline_seconds
        self._provider_timeout = provider_timeout_seconds
        self._clock = clock
        self._sleep = sleep

    def registry(self) -> Registry:
        """The current registry; raises ConfigError when it cannot be loaded."""
        return self._registry()

    def availability(self, model: Model) -> str | None:
        """None when the model can be called now, else why not."""
        provider = self._providers.get(model.provider)
        if provider is None:
            return f"no adapter for provider '{model.provider}'"
        return provider.availability(model)

    def deadline_seconds(self, time_left_s: float | None) -> float:
        """The whole request's deadline: the configured one, within the platform's time left."""
        limit = self._deadline_seconds
        if time_left_s is not None:
            limit = min(limit, time_left_s - DEADLINE_SAFETY_MARGIN_SECONDS)
        return max(limit, 0.0)

    def route(self, request: RouteRequest, time_left_s: float | None = None) -> RouteResult:
        """Decide, call (with failover) and settle; a dry run stops after deciding."""
        result, deadline = self._decide(request, time_left_s)
        if request.dry_run:
            return result
        return self._call_with_failover(result, deadline, streaming=False)[0]

    def route_stream(self, request: RouteRequest, time_left_s: float | None = None) -> StreamedRoute:
        """Decide and start a streamed call; failover happens only before the first piece."""
        result, deadline = self._decide(request, time_left_s)
        result, pieces = self._call_with_failover(result, deadline, streaming=True)
        settled = self._settle_stream(result, pieces, deadline)
        # Prime it: once inside its try block, closing it (a client that went away) always runs
        # its cleanup, even before the first piece was asked for.
        next(settled)
        return StreamedRoute(result=result, pieces=settled)

    def _decide(self, request: RouteRequest, time_left_s: float | None) -> tuple[RouteResult, float]:
        started = self._clock()
        deadline = started + self.deadline_seconds(time_left_s)
        registry = self._registry()
        models = self._candidate_models(registry, request)
        selection = self._selection_request(request)
        unavailable, over_budget = self._unavailable(models, request)
        try:
            decision = select_model(models, selection, unavailable)
        except UnknownProviderError as exc:
            param = request.param_names.get("prefer_provider", "prefer_provider")
            raise InvalidRequest(
                f"'{param}' is '{exc.provider}', which no model in the registry has; providers: {', '.join(exc.known)}",
                param,
            ) from exc
        trace = list(decision.trace)
        if request.pinned_model:
            trace.insert(0, f"Model pinned to {request.pinned_model} by the request: no routing.")
        if decision.model is None:
            raise self._no_model(decision, request, over_budget, trace)
        plan = self._plan(decision.model, request, trace)
        result = RouteResult(request=request, decision=decision, model=decision.model, plan=plan, trace=trace, pool=models)
        return result, deadline

    def _candidate_models(self, registry: Registry, request: RouteRequest) -> tuple[Model, ...]:
        if request.pinned_model is None:
            return registry.models
        model = registry.get(request.pinned_model)
        if model is None:
            raise InvalidRequest(
                f"model '{request.pinned_model}' is not in the registry; use 'auto' or one of: "
                + ", ".join(m.id for m in registry.models),
                "model",
                status=404,
            )
        return (model,)

    @staticmethod
    def _selection_request(request: RouteRequest) -> SelectionRequest:
        return SelectionRequest(
            constraints=request.constraints,
            input_tokens=estimate_prompt_tokens(request.messages),
            task_type=request.task_type,
            expected_output_tokens=request.expected_output_tokens,
        )

    def _unavailable(self, models: tuple[Model, ...], request: RouteRequest) -> tuple[dict[str, str], set[str]]:
        """Why each unusable model cannot be used, and which of them the budget rules out.

        ``max_cost_usd`` is a hard ceiling whether or not ``strict_budget`` is set: a model whose
        worst-case input alone could exceed the budget is ruled out, because no output cap could
        then keep the ceiling. (``strict_budget`` is about the *estimate*: without it, the ladder's
        relaxed rungs may still pick a model whose estimated cost is over the budget, and the
        ceiling then cuts its output.)
        """
        unavailable: dict[str, str] = {}
        over_budget: set[str] = set()
        budget = request.constraints.max_cost_usd
        bound = request.prompt_bound
        for model in models:
            reason = self.availability(model) or self._breakers.skip_reason(model.id)
            if reason is None and budget is not None:
                if input_alone_exceeds(model, budget, bound):
                    over_budget.add(model.id)
                    reason = (
                        f"the input alone could cost more than the budget of {format_usd(budget)} "
                        f"(worst case {bound} prompt tokens)"
                    )
            if reason is not None:
                unavailable[model.id] = reason
        return unavailable, over_budget

    def _plan(self, model: Model, request: RouteRequest, trace: list[str]) -> CallPlan:
        cap = model.max_output_tokens
        if request.max_tokens is not None and request.max_tokens < cap:
            cap = request.max_tokens
        budget = request.constraints.max_cost_usd
        if budget is None:
            return CallPlan(max_tokens=cap, ceiling_applied=False)
        bound = request.prompt_bound
        ceiling = output_token_ceiling(model, budget, bound)
        if ceiling == 0:
            # _unavailable rules such a model out before selection; calling it could break the ceiling.
            message = (
                f"Cost ceiling: cannot hold for {model.id}: a worst-case prompt of {bound} tokens alone could cost "
                f"{format_usd(cost_usd(model, bound, 0))}, over the budget of {format_usd(budget)}."
            )
            trace.append(message)
            raise RoutingFailed(402, "budget_exceeded", message, trace=tuple(trace))
        if ceiling < cap:
            trace.append(
                f"Cost ceiling: max_tokens {ceiling} for {model.id}, so that even a worst-case prompt of {bound} "
                f"tokens and {ceiling} output tokens cost at most {format_usd(budget)}."
            )
            return CallPlan(max_tokens=ceiling, ceiling_applied=True)
        return CallPlan(max_tokens=cap, ceiling_applied=False)

    def _call_with_failover(
        self, result: RouteResult, deadline: float, streaming: bool
    ) -> tuple[RouteResult, Iterator[StreamPiece] | None]:
        request = result.request
        models = result.pool
        tried: dict[str, str] = {}
        waited_out: set[str] = set()
        last_error: ProviderError | None = None
        while True:
            model = result.model
            remaining = deadline - self._clock()
            if remaining <= 0:
                result.trace.append("The request's deadline has passed; no further attempt.")
                raise RoutingFailed(504, "deadline_exceeded", "the request's deadline passed before a model answered",
                                    tuple(result.attempts), tuple(result.trace))
            call = ProviderCall(
                messages=request.raw_messages,
                max_tokens=result.plan.max_tokens,
                timeout_s=min(remaining, self._provider_timeout),
                max_tokens_field=model.max_tokens_field or request.max_tokens_field,
                params=request.provider_params,
            )
            provider = self._providers[model.provider]
            permit = self._breakers.acquire(model.id)
            if not permit.allowed:
                # Another request took the half-open trial after the ladder ran: skip, not an attempt.
                result.trace.append(f"{model.id}: skipped at call time: {permit.reason}.")
                tried[model.id] = permit.reason or "circuit open"
                self._fail_over(result, models, tried, deadline, last_error)
                continue
            if permit.trial:
                result.trace.append(f"{model.id}: its breaker is half-open; this call is the trial.")
            began = self._clock()
            try:
                if streaming:
                    pieces = provider.stream(model, call)
                    outcome: Completion | Iterator[StreamPiece] = pieces
                else:
                    outcome = provider.complete(model, call)
            except BaseException as exc:
                if not isinstance(exc, ProviderError):
                    # A programming error, not the model's verdict: never leave its trial slot taken.
                    self._breakers.release(model.id)
                    raise
                last_error = exc
                duration = (self._clock() - began) * 1000
                result.provider_ms += duration
                result.attempts.append(Attempt(model.id, exc.kind, round(duration, 3), exc.status, exc.message))
                result.trace.append(
                    f"Attempt {len(result.attempts)}: {model.id} failed after {duration:.0f} ms ({exc.kind}): {exc.message}."
                )
                if exc.kind == TIMEOUT and call.timeout_s < self._provider_timeout:
                    # The request's own deadline cut this call short: no verdict on the model.
                    self._breakers.release(model.id)
                elif exc.failover:
                    self._breakers.record_failure(model.id)
                else:
                    self._breakers.release(model.id)
                    raise self._fatal(exc, result) from exc
                if self._wait_out_rate_limit(exc, model, deadline, waited_out, result):
                    continue
                tried[model.id] = f"already tried: {exc.kind}"
                self._fail_over(result, models, tried, deadline, exc)
                continue
            duration = (self._clock() - began) * 1000
            result.provider_ms += duration
            if streaming:
                # The breaker's verdict waits for the stream's end (_settle_stream).
                self._record_success(result, model, duration)
                return result, outcome  # type: ignore[return-value]
            self._breakers.record_success(model.id)
            assert isinstance(outcome, Completion)
            if not outcome.usage_reported:
                prompt, completion = self._worst_case_usage(result, outcome.text)
                outcome = dataclasses.replace(outcome, prompt_tokens=prompt, completion_tokens=completion)
            result.completion = outcome
            self._record_success(result, model, duration)
            self._trace_settlement(result)
            return result, None

    @staticmethod
    def _record_success(result: RouteResult, model: Model, duration_ms: float) -> None:
        result.attempts.append(Attempt(model.id, "ok", round(duration_ms, 3)))
        if len(result.attempts) > 1:
            # After a failover the trace lists every attempt; a lone success is the settlement line.
            result.trace.append(f"Attempt {len(result.attempts)}: {model.id} answered after {duration_ms:.0f} ms.")

    def _wait_out_rate_limit(
        self, exc: ProviderError, model: Model, deadline: float, waited_out: set[str], result: RouteResult
    ) -> bool:
        if exc.kind != RATE_LIMITED or exc.retry_after_s is None or model.id in waited_out:
            return False
        if not 0 <= exc.retry_after_s < float("inf"):  # NaN, negative or infinite: not a usable wait
            return False
        left = deadline - self._clock()
        needed = exc.retry_after_s + model.latency_ms / 1000
        if needed > left:
            result.trace.append(
                f"Retry-After {exc.retry_after_s:g} s plus {model.id}'s {model.latency_ms} ms does not fit the "
                f"{left:.1f} s left; not waiting."
            )
            return False
        result.trace.append(f"Honouring Retry-After: waiting {exc.retry_after_s:g} s, then trying {model.id} once more.")
        waited_out.add(model.id)
        self._sleep(exc.retry_after_s)
        return True

    def _fail_over(
        self,
        result: RouteResult,
        models: tuple[Model, ...],
        tried: dict[str, str],
        deadline: float,
        exc: ProviderError | None,
    ) -> None:
        """Choose the next model; ``exc`` is the failure that ended the last attempt, if one was made."""
        request = result.request
        if request.pinned_model:
            raise self._exhausted(result, exc, "the pinned model failed and a pinned request does not fail over")
        left_ms = int((deadline - self._clock()) * 1000)
        limit = left_ms if request.constraints.max_latency_ms is None else min(left_ms, request.constraints.max_latency_ms)
        selection = dataclasses.replace(
            self._selection_request(request),
            constraints=dataclasses.replace(request.constraints, max_latency_ms=max(limit, 1)),
        )
        unavailable = {**self._unavailable(models, request)[0], **tried}
        decision = select_model(models, selection, unavailable)
        result.trace.append(
            f"Failover: the ladder runs again over the models not yet tried, with a latency limit of "
            f"{max(limit, 1)} ms (what is left of the deadline and the caller's limit)."
        )
        result.trace.extend(f"  {line}" for line in decision.trace[2:])
        if decision.model is None:
            untried = [
                f"{c.model.id} ({c.reason})" for c in decision.candidates if c.verdict == "excluded" and c.model.id not in tried
            ]
            why = decision.failure or "no model left"
            raise self._exhausted(result, exc, why + (f"; not tried: {'; '.join(untried)}" if untried else ""))
        result.decision = decision
        result.model = decision.model
        result.plan = self._plan(decision.model, request, result.trace)

    def _settle_stream(
        self, result: RouteResult, pieces: Iterator[StreamPiece] | None, deadline: float
    ) -> Iterator[StreamPiece]:
        """Pass the pieces on, within the deadline; settle and give the breaker its verdict at the end.

        A failure or the deadline mid-stream is settled on the worst case and raised as a
        ProviderError (the web layer ends the stream with an error event); a client that goes
        away closes the upstream stream and leaves the breaker untouched.
        """
        assert pieces is not None
        model_id = result.model.id
        began = self._clock()
        texts: list[str] = []
        tool_calls: list[Mapping[str, Any]] = []
        finish = "stop"
        prompt_tokens: int | None = None
        completion_tokens: int | None = None
        verdict: bool | None = None
        try:
            yield StreamPiece()  # the priming step of route_stream; never reaches the caller
            for piece in pieces:
                texts.append(piece.text)
                tool_calls.extend(piece.tool_calls)
                if piece.finish_reason:
                    finish = piece.finish_reason
                    prompt_tokens = piece.prompt_tokens
                    completion_tokens = piece.completion_tokens
                yield piece
                if self._clock() > deadline:
                    raise ProviderError(TIMEOUT, "the request's deadline passed while the answer was streaming", status=504)
            verdict = True
        except ProviderError as exc:
            verdict = False
            finish = "error"
            result.trace.append(f"The stream from {model_id} failed after it started ({exc.kind}): {exc.message}.")
            raise
        finally:
            close = getattr(pieces, "close", None)
            if callable(close):
                close()
            if verdict is True:
                self._breakers.record_success(model_id)
            elif verdict is False:
                self._breakers.record_failure(model_id)
            else:
                self._breakers.release(model_id)
            text = "".join(texts)
            result.provider_ms += (self._clock() - began) * 1000
            reported = prompt_tokens is not None and completion_tokens is not None
            if prompt_tokens is None or completion_tokens is None:
                prompt_tokens, completion_tokens = self._worst_case_usage(result, text)
            result.completion = Completion(
                text=text,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                finish_reason=finish,
                latency_ms=result.provider_ms,
                latency_kind="measured",
                usage_reported=reported,
                tool_calls=tuple(tool_calls),
            )
            self._trace_settlement(result)

    @staticmethod
    def _worst_case_usage(result: RouteResult, text: str) -> tuple[int, int]:
        """Token counts to settle on when the provider reports no usage: never below the truth.

        The prompt's bound (no byte-level tokenizer exceeds it), and for the answer its UTF-8 bytes,
        at most the output cap sent (a provider cannot exceed it).
        """
        cap = result.plan.max_tokens if result.plan.max_tokens is not None else result.model.max_output_tokens
        return result.request.prompt_bound, min(cap, len(text.encode("utf-8")))

    @staticmethod
    def _trace_settlement(result: RouteResult) -> None:
        completion = result.completion
        assert completion is not None
        actual = result.actual_cost_usd
        budget = result.request.constraints.max_cost_usd
        counted = (
            f"reported {completion.prompt_tokens} prompt and {completion.completion_tokens} completion tokens"
            if completion.usage_reported
            else f"reported no usage; settled on the worst case of {completion.prompt_tokens} prompt tokens (the "
            f"bound) and {completion.completion_tokens} completion tokens (the answer's bytes, at most max_tokens)"
        )
        line = (
            f"Settled: {result.model.id} {counted}, costing {format_usd(actual)} "
            f"(estimated {format_usd(result.decision.estimate.cost_usd if result.decision.estimate else None)})"
        )
        if budget is not None:
            line += f"; budget {format_usd(budget)}"
        result.trace.append(line + ".")
        if completion.finish_reason == "length" and result.plan.ceiling_applied:
            result.trace.append("The answer was cut at the cost ceiling's max_tokens (finish_reason 'length').")

    @staticmethod
    def _no_model(decision: Decision, request: RouteRequest, over_budget: set[str], trace: list[str]) -> RoutingFailed:
        excluded = {c.model.id: c.reason for c in decision.candidates if c.verdict == "excluded"}
        if request.pinned_model:
            reason = excluded.get(request.pinned_model, decision.failure or "unavailable")
            budget_bound = request.pinned_model in over_budget or decision.budget_refused
            return RoutingFailed(
                402 if budget_bound else 503,
                "budget_exceeded" if budget_bound else "model_unavailable",
                f"model {request.pinned_model} cannot be used: {reason}",
                trace=tuple(trace),
            )
        reasons = "; ".join(f"{model_id}: {why}" for model_id, why in excluded.items())
        if decision.budget_refused or over_budget:
            return RoutingFailed(402, "budget_exceeded", f"{sentence(decision.failure or '')}: {reasons}", trace=tuple(trace))
        return RoutingFailed(503, "no_model_available", f"{sentence(decision.failure or 'no model')}: {reasons}",
                             trace=tuple(trace))

    @staticmethod
    def _fatal(exc: ProviderError, result: RouteResult) -> RoutingFailed:
        status, error_type = {
            AUTH: (502, "upstream_auth_error"),
            FORBIDDEN: (502, "upstream_forbidden"),
            NOT_FOUND: (502, "upstream_model_not_found"),
            BAD_REQUEST: (400, "upstream_bad_request"),
        }.get(exc.kind, (502, "upstream_error"))
        return RoutingFailed(status, error_type, f"{result.model.id}: {exc.message}", tuple(result.attempts), tuple(result.trace))

    @staticmethod
    def _exhausted(result: RouteResult, exc: ProviderError | None, why: str) -> RoutingFailed:
        if exc is None:
            status, error_type = 503, "no_model_available"
        else:
            status, error_type = {
                TIMEOUT: (504, "upstream_timeout"),
                RATE_LIMITED: (503, "upstream_rate_limited"),
                KEY_UNAVAILABLE: (503, "key_unavailable"),
            }.get(exc.kind, (502, "upstream_error"))
        attempts = "; ".join(f"{a.model_id}: {a.outcome}" for a in result.attempts)
        result.trace.append(f"No model left to try: {why}.")
        last = exc.message if exc is not None else why
        return RoutingFailed(
            status,
            error_type,
            f"every attempt failed ({attempts or 'none made'}); last: {last}",
            tuple(result.attempts),
            tuple(result.trace),
        )
