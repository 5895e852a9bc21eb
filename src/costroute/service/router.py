"""The routing loop: decide -> plan -> reserve -> call -> recover? -> settle.

The decisions are the core's: selection picks the model, ``plan_call`` sets the cost ceiling,
``next_step`` says whether to wait, fail over or stop, ``settle`` prices what the call used. This
module drives them, times the attempts, keeps the circuit breakers and the trace, and tells the
budget port what to reserve and settle. It knows no HTTP status: failures are typed reasons.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from costroute.breaker import CircuitBreakers
from costroute.core.estimate import estimate_prompt_tokens
from costroute.core.outcome import Attempt, ErrorReason, FailureKind, ProviderError, RoutingFailed
from costroute.core.plan import CallPlan, WorstInput, input_alone_exceeds, least_call_cost, plan_call, worst_input
from costroute.core.recovery import FailOver, Retry, Stop, Verdict, breaker_verdict, exhausted_reason, next_step
from costroute.core.registry import AmbiguousModel, Model, Registry
from costroute.core.requests import InvalidRequest, RequestProblem, RouteRequest
from costroute.core.selection import (
    EXCLUDED,
    Decision,
    SelectionRequest,
    UnknownProviderError,
    format_usd,
    select_model,
    sentence,
)
from costroute.core.settle import Settlement, settle, usage_cost
from costroute.providers.base import Completion, Provider, ProviderCall, StreamPiece

if TYPE_CHECKING:
    # Spend control's modules are imported only when budgets are configured (a cold start without
    # them does not pay for their classes).
    from costroute.service.spend import BudgetView, RequestSpend, SpendGate
    from costroute.stores.base import LedgerEntry

logger = logging.getLogger("costroute.router")

# The caller of a request that names none (no API key, no bearer token).
ANONYMOUS = "anonymous"

# Never plan to use the last moments before the platform's own limit.
DEADLINE_SAFETY_MARGIN_SECONDS = 0.5
# A request plans again within what its caller has left while concurrent requests keep taking the
# money, until it fits, nothing fits, or its deadline passes; this bounds the store round trips.
BUDGET_TRIES = 100


class RequestContext(NamedTuple):
    """Which request this is and who sent it: the web layer knows, the router records (ledger, budgets)."""

    request_id: str = ""
    caller: str = ANONYMOUS


class ProviderLookup(Protocol):
    """The adapter that serves a model of the current registry."""

    def for_model(self, model: Model, registry: Registry) -> Provider | None:
        """The provider adapter of ``model``, or None when the registry has no such provider."""
        ...


@dataclass(frozen=True)
class RouteOutcome:
    """Everything an answer needs: the decision, the call, its usage and its exact cost."""

    request: RouteRequest
    decision: Decision
    model: Model
    plan: CallPlan
    trace: tuple[str, ...]
    attempts: tuple[Attempt, ...] = ()
    completion: Completion | None = None
    settlement: Settlement | None = None
    provider_ms: float = 0.0
    # The provider failure that ended a stream after it started, if one did.
    stream_error: ProviderError | None = None
    # Where the caller stands after this request, when budgets exist.
    budget: BudgetView | None = None
    # The kind of the serving model's provider (mock, openai, anthropic, bedrock).
    provider_kind: str | None = None

    @property
    def actual_cost_usd(self) -> Decimal | None:
        """The settled cost, exact; None for a dry run."""
        return self.settlement.cost_usd if self.settlement else None

    @property
    def failovers(self) -> int:
        """How many times another model was tried after a failure."""
        models = [attempt.model_id for attempt in self.attempts]
        return sum(1 for before, after in zip(models, models[1:], strict=False) if before != after)


class StreamEnd(NamedTuple):
    """The last item of a streamed route: the settled outcome (its ``stream_error`` says if the stream broke)."""

    outcome: RouteOutcome


class StreamedRoute(NamedTuple):
    """A route whose answer arrives in pieces; the last item the pieces yield is a ``StreamEnd``.

    ``opening`` is the account as it stands when the first piece is ready (for response headers).
    """

    opening: RouteOutcome
    pieces: Iterator[StreamPiece | StreamEnd]


@dataclass
class _Run:
    """The state of one request while its attempts are made (never seen outside this module)."""

    request: RouteRequest
    registry: Registry
    pool: tuple[Model, ...]
    decision: Decision
    model: Model
    plan: CallPlan
    deadline: float
    trace: list[str]
    attempts: list[Attempt] = field(default_factory=list)
    tried: dict[str, str] = field(default_factory=dict)
    waited: set[str] = field(default_factory=set)
    provider_ms: float = 0.0
    last_error: ProviderError | None = None
    spend: RequestSpend | None = None
    context: RequestContext = field(default_factory=RequestContext)

    def outcome(self, **final: Any) -> RouteOutcome:
        """The frozen account of this run."""
        spec = self.registry.providers.get(self.model.provider)
        return RouteOutcome(request=self.request, decision=self.decision, model=self.model, plan=self.plan,
                            trace=tuple(self.trace), attempts=tuple(self.attempts), provider_ms=self.provider_ms,
                            provider_kind=spec.kind if spec is not None else None, **final)

    def failed(self, reason: ErrorReason, message: str, **extra: Any) -> RoutingFailed:
        """A typed failure carrying this run's attempts and trace."""
        return RoutingFailed(reason, message, tuple(self.attempts), tuple(self.trace), **extra)


class RouterService:
    """Routes requests over the registry with the configured providers."""

    def __init__(
        self,
        registry: Callable[[], Registry],
        providers: ProviderLookup,
        breakers: CircuitBreakers,
        deadline_seconds: float,
        provider_timeout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        spend: SpendGate | None = None,
    ) -> None:
        self._spend = spend
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

    def availability(self, model: Model, registry: Registry) -> str | None:
        """None when the model can be called now, else why not."""
        provider = self._providers.for_model(model, registry)
        if provider is None:
            return f"no adapter for provider '{model.provider}'"
        return provider.availability(model) or self._breakers.skip_reason(model.id)

    def deadline_seconds(self, time_left_s: float | None) -> float:
        """The whole request's deadline: the configured one, within the platform's time left."""
        limit = self._deadline_seconds
        if time_left_s is not None:
            limit = min(limit, time_left_s - DEADLINE_SAFETY_MARGIN_SECONDS)
        return max(limit, 0.0)

    def route(self, request: RouteRequest, time_left_s: float | None = None,
              context: RequestContext | None = None) -> RouteOutcome:
        """Decide, reserve, call (with failover) and settle; a dry run stops after deciding."""
        run = self._decide_within_budget(request, time_left_s, context or RequestContext())
        if request.dry_run:
            return run.outcome(budget=run.spend.view() if run.spend else None)
        try:
            completion = self._call_until_answered(run, streaming=False)
        except BaseException as exc:
            self._settle_failure(run, exc)
            raise
        assert isinstance(completion, Completion)
        settlement = settle(run.model, run.plan, completion.usage, _answer_bytes(completion.text, completion.tool_calls),
                            complete=True)
        self._trace_settlement(run, settlement, completion.finish_reason)
        budget = self._settle_spend(run, settlement, "ok")
        return run.outcome(completion=completion, settlement=settlement, budget=budget)

    def route_stream(self, request: RouteRequest, time_left_s: float | None = None,
                     context: RequestContext | None = None) -> StreamedRoute:
        """Decide, reserve and start a streamed call; failover happens only before the first piece."""
        run = self._decide_within_budget(request, time_left_s, context or RequestContext())
        try:
            pieces = self._call_until_answered(run, streaming=True)
        except BaseException as exc:
            self._settle_failure(run, exc)
            raise
        assert not isinstance(pieces, Completion)
        opening = run.outcome(budget=run.spend.view() if run.spend else None)
        settled = self._settle_stream(run, pieces)
        # Prime it: once inside its try block, closing it (a client that went away) always runs
        # its cleanup, even before the first piece was asked for.
        next(settled)
        return StreamedRoute(opening=opening, pieces=settled)

    # ---- deciding -------------------------------------------------------------------------------

    def _decide_within_budget(self, request: RouteRequest, time_left_s: float | None, context: RequestContext) -> _Run:
        """Decide, then hold the plan's worst case in the caller's budget, deciding again within what is left."""
        deadline = self._clock() + self.deadline_seconds(time_left_s)
        spend = None
        if self._spend is not None:
            budget = self._spend.admit(context.caller)
            spend = self._spend.open(budget, context.request_id or uuid.uuid4().hex, self.deadline_seconds(time_left_s))
        run = self._decide(request, deadline)
        run.spend, run.context = spend, context
        if spend is None:
            return run
        if request.dry_run:
            # Shown, not held: a dry run plans within what is left now, and reserves nothing.
            left = spend.look().tightest_remaining_usd
            return self._within(run, left, request, deadline) if left is not None else run
        for _ in range(BUDGET_TRIES):
            if self._clock() >= deadline:
                break
            room = spend.cover(run.plan.worst_case_usd)
            if room is None:
                if spend.limited:
                    run.trace.append(f"Budget: held {format_usd(run.plan.worst_case_usd)} (this call's worst case) for "
                                     f"caller {_caller_name(spend)}; {_left_text(spend.view())} left after it.")
                return run
            run = self._within(run, room, request, deadline)
        raise run.failed(ErrorReason.DEADLINE_EXCEEDED, "the request's deadline passed while concurrent requests kept "
                         "taking the caller's budget")

    def _within(self, run: _Run, room: Decimal, request: RouteRequest, deadline: float) -> _Run:
        """Decide again with the caller's room as the budget, when it is tighter than the request's own."""
        spend = run.spend
        assert spend is not None
        own = request.constraints.max_cost_usd
        if own is not None and own <= room and run.plan.budget_usd == own:
            return run
        line = (f"Budget: caller {_caller_name(spend)} can hold at most {format_usd(room)} now, so the request is "
                f"planned within {format_usd(room if own is None else min(own, room))}"
                + (f" (its own max_cost_usd is {format_usd(own)})." if own is not None else "."))
        if room <= 0:
            raise spend.exhausted(f"caller {_caller_name(spend)} has no budget left: {_left_text(spend.view())}",
                                  (*run.trace, line), self._least_call_cost(run))
        effective = room if own is None else min(own, room)
        bounded = dataclasses.replace(request, constraints=dataclasses.replace(request.constraints, max_cost_usd=effective))
        try:
            again = self._decide(bounded, deadline)
        except RoutingFailed as exc:
            if exc.reason is not ErrorReason.BUDGET_EXCEEDED:
                raise
            raise spend.exhausted(f"not even the input fits what caller {_caller_name(spend)} has left "
                                  f"({format_usd(room)}): {exc.message}", (*exc.trace, line),
                                  self._least_call_cost(run)) from exc
        again.trace.insert(0, line)
        again.spend, again.context = spend, run.context
        return again

    def _least_call_cost(self, run: _Run) -> Decimal | None:
        """The least any usable model of the request's pool could be held for (its input and one output token)."""
        unbounded = dataclasses.replace(run.request, constraints=dataclasses.replace(run.request.constraints,
                                                                                    max_cost_usd=None))
        unavailable, _ = self._unavailable(run.registry, run.pool, unbounded)
        costs = [least_call_cost(model, self._worst_input(run.registry, model, run.request))
                 for model in run.pool if model.id not in unavailable]
        return min(costs, default=None)

    def _decide(self, request: RouteRequest, deadline: float) -> _Run:
        registry = self._registry()
        pool = self._candidate_models(registry, request)
        unavailable, over_budget = self._unavailable(registry, pool, request)
        try:
            decision = select_model(pool, self._selection_request(request), unavailable)
        except UnknownProviderError as exc:
            param = request.param("prefer_provider")
            raise InvalidRequest(
                f"'{param}' is '{exc.provider}', which no model in the registry has; providers: {', '.join(exc.known)}",
                param,
            ) from exc
        trace = list(decision.trace)
        if request.pinned_model:
            trace.insert(0, f"Model pinned to {pool[0].id} by the request: no routing.")
        if decision.model is None:
            raise self._no_model(decision, request, pool, over_budget, trace)
        plan = self._plan(registry, decision.model, request, trace)
        return _Run(request=request, registry=registry, pool=pool, decision=decision, model=decision.model,
                    plan=plan, deadline=deadline, trace=trace)

    def _candidate_models(self, registry: Registry, request: RouteRequest) -> tuple[Model, ...]:
        if request.pinned_model is None:
            return registry.models
        try:
            model = registry.resolve(request.pinned_model)
        except AmbiguousModel as exc:
            raise InvalidRequest(f"model '{exc.name}' names several models of the registry; pin one by its id: "
                                 f"{', '.join(exc.ids)}", "model") from exc
        if model is None:
            raise InvalidRequest(
                f"model '{request.pinned_model}' is not in the registry; use 'auto' or one of: "
                + ", ".join(m.id for m in registry.models),
                "model",
                RequestProblem.NOT_FOUND,
            )
        provider = self._providers.for_model(model, registry)
        refused = provider.unsupported(model, request.provider_params, request.raw_messages) if provider else None
        if refused is not None:
            raise InvalidRequest(f"model {model.id} cannot take this request: {refused}", "model")
        return (model,)

    @staticmethod
    def _selection_request(request: RouteRequest) -> SelectionRequest:
        return SelectionRequest(
            constraints=request.constraints,
            input_tokens=estimate_prompt_tokens(request.messages),
            task_type=request.task_type,
            expected_output_tokens=request.expected_output_tokens,
            quality_param=request.param("min_quality"),
            output_param=request.param("expected_output_tokens"),
        )

    def _worst_input(self, registry: Registry, model: Model, request: RouteRequest) -> WorstInput:
        provider = self._providers.for_model(model, registry)
        extra = provider.prompt_overhead(model, request.provider_params, request.raw_messages) if provider else 0
        return worst_input(model, request.prompt_bound, extra, request.cache_breakpoints)

    def _unavailable(
        self, registry: Registry, models: tuple[Model, ...], request: RouteRequest
    ) -> tuple[dict[str, str], set[str]]:
        """Why each unusable model cannot be used, and which of them the budget rules out.

        ``max_cost_usd`` is a hard ceiling whether or not ``strict_budget`` is set: a model whose
        worst-case input leaves no room within the budget for even one output token is ruled out,
        because no output cap could then keep the ceiling. (``strict_budget`` is about the
        *estimate*: without it, the ladder's relaxed rungs may still pick a model whose estimated
        cost is over the budget, and the ceiling then cuts its output.)
        """
        unavailable: dict[str, str] = {}
        over_budget: set[str] = set()
        budget = request.constraints.max_cost_usd
        for model in models:
            provider = self._providers.for_model(model, registry)
            if provider is None:
                unavailable[model.id] = f"no adapter for provider '{model.provider}'"
                continue
            reason = (
                provider.availability(model)
                or self._breakers.skip_reason(model.id)
                or (None if request.pinned_model else registry.routing_excluded.get(model.id))
                or provider.unsupported(model, request.provider_params, request.raw_messages)
            )
            if reason is None and budget is not None:
                worst = self._worst_input(registry, model, request)
                if input_alone_exceeds(model, worst, budget):
                    over_budget.add(model.id)
                    reason = (
                        f"its worst-case input ({worst.tokens} prompt tokens at the {worst.rate_name} price, "
                        f"{format_usd(worst.cost_usd)}) leaves no room within the budget of {format_usd(budget)} "
                        "for one output token"
                    )
            if reason is not None:
                unavailable[model.id] = reason
        return unavailable, over_budget

    def _plan(self, registry: Registry, model: Model, request: RouteRequest, trace: list[str]) -> CallPlan:
        budget = request.constraints.max_cost_usd
        worst = self._worst_input(registry, model, request)
        plan = plan_call(model, worst, request.max_tokens, budget)
        if plan is None:
            # _unavailable rules such a model out before selection; calling it could break the ceiling.
            message = (
                f"Cost ceiling: cannot hold for {model.id}: a worst-case prompt of {worst.tokens} tokens alone could "
                f"cost {format_usd(worst.cost_usd)}, leaving no room within the budget of {format_usd(budget)} for "
                "one output token."
            )
            trace.append(message)
            raise RoutingFailed(ErrorReason.BUDGET_EXCEEDED, message, trace=tuple(trace))
        if plan.ceiling_applied:
            priced = "" if worst.rate_name == "input" else f" (priced at the {worst.rate_name} rate)"
            trace.append(
                f"Cost ceiling: max_tokens {plan.max_tokens} for {model.id}, so that even a worst-case prompt of "
                f"{worst.tokens} tokens{priced} and {plan.max_tokens} output tokens cost at most {format_usd(budget)}."
            )
        return plan

    # ---- calling --------------------------------------------------------------------------------

    def _timeout_for(self, run: _Run) -> tuple[float, float]:
        """The provider's own timeout, and this call's (the smaller of it and what is left of the deadline)."""
        spec = run.registry.providers.get(run.model.provider)
        own = spec.timeout_seconds if spec is not None and spec.timeout_seconds else self._provider_timeout
        return own, min(run.deadline - self._clock(), own)

    def _call_until_answered(self, run: _Run, streaming: bool) -> Completion | Iterator[StreamPiece]:
        """Call the chosen model, recovering from failures as the policy says, until one answers."""
        while True:
            model = run.model
            if run.deadline - self._clock() <= 0:
                run.trace.append("The request's deadline has passed; no further attempt.")
                raise run.failed(ErrorReason.DEADLINE_EXCEEDED, "the request's deadline passed before a model answered")
            provider = self._providers.for_model(model, run.registry)
            assert provider is not None  # selection only picks models with an adapter
            permit = self._breakers.acquire(model.id)
            if not permit.allowed:
                # Another request took the half-open trial after the ladder ran: skip, not an attempt.
                run.trace.append(f"{model.id}: skipped at call time: {permit.reason}.")
                run.tried[model.id] = permit.reason or "circuit open"
                self._fail_over(run)
                continue
            if permit.trial:
                run.trace.append(f"{model.id}: its breaker is half-open; this call is the trial.")
            own_timeout, timeout = self._timeout_for(run)
            call = ProviderCall(messages=run.request.raw_messages, max_tokens=run.plan.max_tokens, timeout_s=timeout,
                                max_tokens_field=run.request.max_tokens_field, params=run.request.provider_params)
            began = self._clock()
            try:
                answer = provider.stream(model, call) if streaming else provider.complete(model, call)
            except ProviderError as exc:
                self._recover(run, exc, began, cut_by_deadline=timeout < own_timeout)
                continue
            except BaseException:
                # A programming error, not the model's verdict: never leave its trial slot taken.
                self._breakers.release(model.id)
                raise
            duration = (self._clock() - began) * 1000
            run.provider_ms += duration
            run.attempts.append(Attempt(model.id, None, round(duration, 3)))
            if len(run.attempts) > 1:
                # After a failover the trace lists every attempt; a lone success is the settlement line.
                run.trace.append(f"Attempt {len(run.attempts)}: {model.id} answered after {duration:.0f} ms.")
            if not streaming:
                # A stream's verdict waits for its end (_settle_stream).
                self._breakers.record_success(model.id)
            return answer

    def _recover(self, run: _Run, exc: ProviderError, began: float, cut_by_deadline: bool) -> None:
        """Record a failed attempt, then wait and retry, fail over, or raise as the policy says."""
        model = run.model
        duration = (self._clock() - began) * 1000
        run.provider_ms += duration
        run.last_error = exc
        run.attempts.append(Attempt(model.id, exc.kind, round(duration, 3), exc.status, exc.message))
        run.trace.append(
            f"Attempt {len(run.attempts)}: {model.id} failed after {duration:.0f} ms ({exc.kind}): {exc.message}."
        )
        verdict = breaker_verdict(exc, cut_by_deadline)
        if verdict is Verdict.FAILURE:
            self._breakers.record_failure(model.id)
        else:
            self._breakers.release(model.id)
        step = next_step(exc, model_id=model.id, retried_already=model.id in run.waited,
                         time_left_s=run.deadline - self._clock(), model_latency_s=model.latency_ms / 1000,
                         pinned=bool(run.request.pinned_model))
        if isinstance(step, Retry):
            run.trace.append(step.why)
            run.waited.add(model.id)
            self._sleep(step.wait_s)
            return
        if step.why:
            run.trace.append(step.why + ("." if not step.why.endswith(".") else ""))
        if isinstance(step, Stop):
            if step.reason is exhausted_reason(exc):
                raise self._exhausted(run, step.why or "no model left")
            raise run.failed(step.reason, f"{model.id}: {exc.message}") from exc
        assert isinstance(step, FailOver)
        run.tried[model.id] = f"already tried: {exc.kind}"
        self._fail_over(run)

    def _fail_over(self, run: _Run) -> None:
        """Choose the next model: the ladder again over the untried models, within the time left."""
        request = run.request
        if request.pinned_model:
            raise self._exhausted(run, "the pinned model failed and a pinned request does not fail over")
        left_ms = int((run.deadline - self._clock()) * 1000)
        caller_limit = request.constraints.max_latency_ms
        limit = max(left_ms if caller_limit is None else min(left_ms, caller_limit), 1)
        selection = dataclasses.replace(
            self._selection_request(request),
            constraints=dataclasses.replace(request.constraints, max_latency_ms=limit),
        )
        unavailable = {**self._unavailable(run.registry, run.pool, request)[0], **run.tried}
        decision = select_model(run.pool, selection, unavailable)
        run.trace.append(
            f"Failover: the ladder runs again over the models not yet tried, with a latency limit of {limit} ms "
            "(what is left of the deadline and the caller's limit)."
        )
        run.trace.extend(f"  {line}" for line in decision.trace[2:])
        if decision.model is None:
            untried = [f"{c.model.id} ({c.reason})" for c in decision.candidates
                       if c.verdict == EXCLUDED and c.model.id not in run.tried]
            why = decision.failure or "no model left"
            raise self._exhausted(run, why + (f"; not tried: {'; '.join(untried)}" if untried else ""))
        run.decision = decision
        run.model = decision.model
        run.plan = self._plan(run.registry, decision.model, request, run.trace)
        self._cover_failover(run)

    def _cover_failover(self, run: _Run) -> None:
        """Hold the next model's worst case; when the budget cannot, plan it within what can be held, or skip it."""
        spend = run.spend
        if spend is None:
            return
        room = spend.cover(run.plan.worst_case_usd)
        if room is None:
            return
        own = run.request.constraints.max_cost_usd
        budget = room if own is None else min(own, room)
        worst = self._worst_input(run.registry, run.model, run.request)
        plan = plan_call(run.model, worst, run.request.max_tokens, budget)
        if plan is not None and spend.cover(plan.worst_case_usd) is None:
            run.trace.append(f"Budget: caller {_caller_name(spend)} can hold at most {format_usd(room)}, so "
                             f"{run.model.id} is planned within it (max_tokens {plan.max_tokens}).")
            run.plan = plan
            return
        run.trace.append(f"Budget: caller {_caller_name(spend)} cannot hold {run.model.id}'s worst case; skipped.")
        run.tried[run.model.id] = f"the caller's budget cannot hold its worst case ({format_usd(room)} left)"
        self._fail_over(run)

    # ---- streams and settlement -----------------------------------------------------------------

    def _settle_stream(self, run: _Run, pieces: Iterator[StreamPiece]) -> Iterator[StreamPiece | StreamEnd]:
        """Pass the pieces on, within the deadline; settle and give the breaker its verdict at the end.

        A failure or the deadline mid-stream is settled on the worst case and reported in the
        ``StreamEnd`` (the web layer ends the stream with an error event); a client that goes away
        closes the upstream stream and leaves the breaker untouched.
        """
        model = run.model
        began = self._clock()
        texts: list[str] = []
        tool_calls: list[Mapping[str, Any]] = []
        refusal: list[str] = []
        finish: Any = None
        usage = None
        verdict: Verdict | None = None
        error: ProviderError | None = None
        try:
            yield StreamPiece()  # the priming step of route_stream; never reaches the caller
            for piece in pieces:
                texts.append(piece.text)
                tool_calls.extend(piece.tool_calls)
                if piece.refusal:
                    refusal.append(piece.refusal)
                if piece.finish_reason:
                    finish, usage = piece.finish_reason, piece.usage
                    continue
                yield piece
                if self._clock() > run.deadline:
                    raise ProviderError(FailureKind.TIMEOUT, "the request's deadline passed while the answer was "
                                        "streaming", status=504)
            if finish is None:
                raise ProviderError(FailureKind.UPSTREAM, f"the stream from {model.id} ended without a finish reason",
                                    status=502)
            verdict = Verdict.SUCCESS
        except ProviderError as exc:
            verdict, error = Verdict.FAILURE, exc
            run.trace.append(f"The stream from {model.id} failed after it started ({exc.kind}): {exc.message}.")
        finally:
            close = getattr(pieces, "close", None)
            try:
                if callable(close):
                    close()
            finally:
                self._end_stream(run, verdict)
        # A client that went away (GeneratorExit) never gets here: nothing more is owed to it.
        text = "".join(texts)
        run.provider_ms += (self._clock() - began) * 1000
        if error is not None:
            run.attempts[-1] = dataclasses.replace(run.attempts[-1], failure=error.kind, status=error.status,
                                                   message=error.message)
        completion = Completion(text=text, usage=usage, finish_reason=finish or "stop", latency_ms=run.provider_ms,
                                tool_calls=tuple(tool_calls), refusal="".join(refusal) or None)
        settlement = settle(model, run.plan, usage if error is None else None, _answer_bytes(text, tool_calls),
                            complete=error is None)
        self._trace_settlement(run, settlement, completion.finish_reason if error is None else None)
        budget = self._settle_spend(run, settlement, "ok" if error is None else error.kind.value)
        yield StreamEnd(run.outcome(completion=completion, settlement=settlement, stream_error=error, budget=budget))

    def _end_stream(self, run: _Run, verdict: Verdict | None) -> None:
        """The breaker's verdict on a stream that ended; a client that went away is charged the worst case."""
        model = run.model
        if verdict is Verdict.SUCCESS:
            self._breakers.record_success(model.id)
        elif verdict is Verdict.FAILURE:
            self._breakers.record_failure(model.id)
        else:
            self._breakers.release(model.id)
            # The client went away: what the provider billed for the part it generated is unknown.
            self._settle_spend(run, settle(model, run.plan, None, 0, complete=False), "client_closed")

    @staticmethod
    def _trace_settlement(run: _Run, settlement: Settlement, finish_reason: str | None) -> None:
        usage = settlement.usage
        model = run.model
        if settlement.reported:
            cached = f" ({usage.cache_read_tokens} read from cache)" if usage.cache_read_tokens else ""
            written = usage.cache_write_tokens + usage.cache_write_1h_tokens
            cached += f" ({written} written to cache)" if written else ""
            counted = f"reported {usage.prompt_tokens} prompt{cached} and {usage.output_tokens} completion tokens"
        elif finish_reason is None:
            counted = (f"failed mid-stream without usage; settled on the whole worst case of {usage.prompt_tokens} "
                       f"prompt tokens and {usage.output_tokens} completion tokens (max_tokens)")
        else:
            counted = (f"reported no usage; settled on the worst case of {usage.prompt_tokens} prompt tokens (the "
                       f"bound) and {usage.output_tokens} completion tokens (the answer's bytes, at most max_tokens)")
        estimate = run.decision.estimate.cost_usd if run.decision.estimate else None
        line = f"Settled: {model.id} {counted}, costing {format_usd(settlement.cost_usd)} (estimated {format_usd(estimate)})"
        budget = run.request.constraints.max_cost_usd
        if budget is not None:
            line += f"; budget {format_usd(budget)}"
        run.trace.append(line + ".")
        run.trace.extend(settlement.notes)
        if settlement.over_budget_usd is not None:
            message = (f"Over budget: {model.provider} did not honour max_tokens {run.plan.max_tokens} for {model.id}: "
                       f"the settled cost {format_usd(settlement.cost_usd)} exceeds the budget of "
                       f"{format_usd(run.plan.budget_usd)} by {format_usd(settlement.over_budget_usd)}.")
            run.trace.append(message)
            logger.warning("%s", message)
        if finish_reason == "length" and run.plan.ceiling_applied:
            run.trace.append("The answer was cut at the cost ceiling's max_tokens (finish_reason 'length').")

    # ---- the caller's money ---------------------------------------------------------------------

    def _settle_spend(self, run: _Run, settlement: Settlement | None, outcome: str) -> BudgetView | None:
        """Replace the request's reservation by its actual cost and write its ledger entry (when it reached a provider)."""
        spend = run.spend
        if spend is None or spend.reservation is None or spend.settled:
            return None
        actual = settlement.cost_usd if settlement is not None else Decimal(0)
        entry = self._ledger_entry(run, spend, settlement, outcome) if run.attempts else None
        view = spend.settle(actual, entry)
        if view is not None and spend.limited and settlement is not None:
            run.trace.append(f"Budget: settled {format_usd(actual)} for caller {_caller_name(spend)}; "
                             f"{_left_text(view)} left.")
        return view

    def _settle_failure(self, run: _Run, failure: BaseException) -> None:
        """A request that failed after its reservation: settle at $0 (errors are not billed), or release the hold."""
        kind = failure.reason.value if isinstance(failure, RoutingFailed) else "internal_error"
        self._settle_spend(run, None, kind)

    def _ledger_entry(self, run: _Run, spend: RequestSpend, settlement: Settlement | None, outcome: str) -> LedgerEntry:
        from costroute.service.spend import baseline_model
        from costroute.stores.base import LedgerEntry

        usage = settlement.usage if settlement is not None else None
        actual = settlement.cost_usd if settlement is not None else Decimal(0)
        baseline = baseline_model(spend.gate.document(), run.registry)
        baseline_cost = usage_cost(baseline, usage)[0] if baseline is not None and usage is not None else Decimal(0)
        estimate = run.decision.estimate.cost_usd if run.decision.estimate is not None else Decimal(0)
        return LedgerEntry(
            request_id=spend.request_id, time=spend.gate.now(), caller=spend.budget.caller, day=spend.periods.day,
            model=run.model.id, provider=run.model.provider, input_tokens=usage.prompt_tokens if usage else 0,
            cached_input_tokens=usage.cache_read_tokens if usage else 0,
            cache_write_tokens=(usage.cache_write_tokens + usage.cache_write_1h_tokens) if usage else 0,
            output_tokens=usage.output_tokens if usage else 0, estimated_cost_usd=estimate, cost_usd=actual,
            baseline_cost_usd=baseline_cost, attempts=len(run.attempts), outcome=outcome)

    # ---- failures -------------------------------------------------------------------------------

    def _no_model(
        self, decision: Decision, request: RouteRequest, pool: tuple[Model, ...], over_budget: set[str],
        trace: list[str],
    ) -> RoutingFailed:
        excluded = {c.model.id: c.reason for c in decision.candidates if c.verdict == EXCLUDED}
        if request.pinned_model:
            model_id = pool[0].id
            reason = excluded.get(model_id, decision.failure or "unavailable")
            if model_id in over_budget or decision.budget_refused:
                return RoutingFailed(ErrorReason.BUDGET_EXCEEDED, f"model {model_id} cannot be used: {reason}",
                                     trace=tuple(trace))
            if decision.quality_refused:
                return RoutingFailed(ErrorReason.QUALITY_UNMET, f"model {model_id} cannot be used: {reason}",
                                     trace=tuple(trace))
            return RoutingFailed(ErrorReason.MODEL_UNAVAILABLE, f"model {model_id} cannot be used: {reason}",
                                 trace=tuple(trace))
        reasons = "; ".join(f"{model_id}: {why}" for model_id, why in excluded.items())
        message = f"{sentence(decision.failure or 'no model')}: {reasons}"
        if decision.quality_refused:
            # Models that meet the floor but cannot be used now: the budget's doing (402), or an outage
            # (503); only when none exists at all is the request impossible (422).
            floor = [model.id for model in pool if model.quality >= decision.required_quality]
            if floor and all(model_id in over_budget for model_id in floor):
                reason = ErrorReason.BUDGET_EXCEEDED
            else:
                reason = ErrorReason.NO_MODEL_AVAILABLE if floor else ErrorReason.QUALITY_UNMET
            return RoutingFailed(reason, message, trace=tuple(trace))
        if decision.budget_refused or over_budget:
            return RoutingFailed(ErrorReason.BUDGET_EXCEEDED, message, trace=tuple(trace))
        return RoutingFailed(ErrorReason.NO_MODEL_AVAILABLE, message, trace=tuple(trace))

    @staticmethod
    def _exhausted(run: _Run, why: str) -> RoutingFailed:
        attempts = "; ".join(f"{a.model_id}: {a.outcome}" for a in run.attempts)
        run.trace.append(f"No model left to try: {why}.")
        last = run.last_error
        retry_after = last.retry_after_s if last is not None and last.kind is not FailureKind.SPEND_LIMIT else None
        return run.failed(
            exhausted_reason(last),
            f"every attempt failed ({attempts or 'none made'}); last: {last.message if last is not None else why}",
            retry_after_s=retry_after,
        )


def _answer_bytes(text: str, tool_calls: Any) -> int:
    """The answer's UTF-8 bytes, tool-call arguments included: a bound on its tokens."""
    size = len(text.encode("utf-8"))
    for call in tool_calls or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            size += len(str(function.get("name") or "").encode("utf-8"))
            size += len(str(function.get("arguments") or "").encode("utf-8"))
    return size


def _caller_name(spend: RequestSpend) -> str:
    budget = spend.budget
    return f"'{budget.name}' ({budget.caller})" if budget.name else f"'{budget.caller}'"


def _left_text(view: BudgetView) -> str:
    """What is left in each limited window, for the trace."""
    from costroute.core.budgets import Window
    parts = [f"{format_usd(w.remaining_usd)} {'today' if w.window is Window.DAY else 'this month'}" for w in view.windows]
    return " and ".join(parts) if parts else "no limit"
