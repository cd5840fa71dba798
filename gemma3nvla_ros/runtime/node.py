"""rclpy.node.Node over the raw-CDR DDS layer."""
from __future__ import annotations

import math
import threading
import weakref
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from gemma3nvla_ros.runtime import rcutils_logger
from gemma3nvla_ros.runtime.arguments import RosArguments, parse_ros_args
from gemma3nvla_ros.runtime.callback_groups import CallbackGroup, MutuallyExclusiveCallbackGroup
from gemma3nvla_ros.runtime.context import Context, default_context
from gemma3nvla_ros.runtime.names import expand_name, normalize_namespace, remap_name, validate_node_name
from gemma3nvla_ros.runtime.parameter import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    Parameter,
    ParameterAlreadyDeclaredException,
    ParameterImmutableException,
    ParameterNotDeclaredException,
)
from gemma3nvla_ros.runtime.params_file import overrides_for_node
from gemma3nvla_ros.runtime.pubsub import Publisher, Subscription
from gemma3nvla_ros.runtime.qos import (
    QoSProfile,
    ReliabilityPolicy,
    qos_from,
    qos_profile_parameter_events,
    qos_profile_services_default,
)
from gemma3nvla_ros.runtime.services import Client, Service
from gemma3nvla_ros.runtime.time import Clock, Duration, ROSClock
from gemma3nvla_ros.runtime.timer import Timer


def _rcl():
    from gemma3nvla_ros.runtime.interfaces import rcl_interfaces
    return rcl_interfaces


class GuardCondition:
    """rclpy.guard_condition.GuardCondition: trigger() makes the executor run its callback once."""

    def __init__(self, callback: Optional[Callable], callback_group, node: "Node"):
        self.callback = callback
        self.callback_group = callback_group
        self._node = node
        self._triggered = False

    def trigger(self) -> None:
        self._triggered = True
        self._node._wake()

    def _take(self) -> bool:
        t, self._triggered = self._triggered, False
        return t

    def destroy(self) -> None:
        self._triggered = False


class Rate:
    """rclpy.timer.Rate: sleep() blocks until the next period of the node clock."""

    def __init__(self, period_ns: int, clock: Clock, context: Context):
        self._period = period_ns
        self._clock = clock
        self._context = context
        self._next = clock.now().nanoseconds + period_ns

    def sleep(self) -> None:
        from gemma3nvla_ros.runtime.time import Time
        self._clock.sleep_until(Time(nanoseconds=self._next, clock_type=self._clock.clock_type), self._context)
        now = self._clock.now().nanoseconds
        self._next += self._period * max(1, (now - self._next) // self._period + 1) if self._period else 0

    def destroy(self) -> None:
        pass


class Node:
    PARAM_REL_TOL = 1e-6

    def __init__(self, node_name: str, *, context: Optional[Context] = None, cli_args: Optional[Sequence[str]] = None,
                 namespace: Optional[str] = None, use_global_arguments: bool = True, enable_rosout: bool = True,
                 start_parameter_services: bool = True, parameter_overrides: Optional[list[Parameter]] = None,
                 allow_undeclared_parameters: bool = False,
                 automatically_declare_parameters_from_overrides: bool = False,
                 enable_logger_service: bool = False):
        self._context = context or default_context()
        if not self._context.ok():
            raise RuntimeError("rclpy.init() has not been called (or the context is shut down)")
        # global (rclpy.init) arguments first, node-local cli_args after: later rules win where rcl says so
        local = parse_ros_args(cli_args) if cli_args else RosArguments()
        self._args = RosArguments(
            remaps=list(local.remaps) + (list(self._context.args.remaps) if use_global_arguments else []),
            param_sources=(list(self._context.args.param_sources) if use_global_arguments else []) + list(local.param_sources),
        )
        for logger, level in local.log_levels.items():
            sev = rcutils_logger.severity_from_name(level)
            (rcutils_logger.set_default_level(sev) if logger is None else rcutils_logger.set_logger_level(logger, sev))
        validate_node_name(node_name)
        self._name = self._args.node_name_override(node_name) or node_name
        validate_node_name(self._name)
        ns_override = self._args.namespace_override(node_name)
        self._namespace = normalize_namespace(ns_override if ns_override is not None else namespace)
        logger_name = (self._namespace.strip("/").replace("/", ".") + "." if self._namespace != "/" else "") + self._name
        self._logger = rcutils_logger.get_logger(logger_name)

        self._lock = threading.RLock()
        self._executor_ref: Optional[weakref.ReferenceType] = None
        self._default_callback_group = MutuallyExclusiveCallbackGroup()
        self._callback_groups: list[CallbackGroup] = [self._default_callback_group]
        self._publishers: list[Publisher] = []
        self._subscriptions: list[Subscription] = []
        self._timers: list[Timer] = []
        self._services: list[Service] = []
        self._clients: list[Client] = []
        self._guards: list[GuardCondition] = []
        self._destroyed = False
        self._generation = 0  # bumped when the set of waitable entities changes

        self._clock = ROSClock()
        self._clock_sub: Optional[Subscription] = None

        # parameters
        self._parameters: dict[str, Parameter] = {}
        self._descriptors: dict[str, Any] = {}
        self._allow_undeclared = allow_undeclared_parameters
        self._on_set_callbacks: list[Callable] = []
        self._pre_set_callbacks: list[Callable] = []
        self._post_set_callbacks: list[Callable] = []
        self._param_lock = threading.RLock()
        overrides = overrides_for_node(self._args, self._name, self.get_fully_qualified_name())
        self._parameter_overrides: dict[str, Parameter] = {}
        for k, v in overrides.items():
            try:
                self._parameter_overrides[k] = Parameter(k, value=v)
            except (TypeError, ValueError) as exc:
                self._logger.warn(f"ignoring parameter override {k}={v!r}: {exc}")
        for p in parameter_overrides or []:
            self._parameter_overrides[p.name] = p

        self._context.graph.add_node(id(self), self._namespace, self._name)
        self._param_events_pub = None
        try:
            self._param_events_pub = self.create_publisher(
                _rcl().msg.ParameterEvent, "/parameter_events", qos_profile_parameter_events)
        except Exception as exc:  # optional feature; never fatal
            self._logger.debug(f"no /parameter_events publisher: {exc!r}")
        self._rosout_sink = None
        if enable_rosout:
            self._start_rosout()
        self.declare_parameter("use_sim_time", False)
        if start_parameter_services:
            from gemma3nvla_ros.runtime.param_services import ParameterService
            self._parameter_service = ParameterService(self)
        if automatically_declare_parameters_from_overrides:
            self.declare_parameters("", [(name, p.value) for name, p in self._parameter_overrides.items()
                                         if not self.has_parameter(name)])

    # --- identity ------------------------------------------------------------------------------------
    @property
    def context(self) -> Context:
        return self._context

    def get_name(self) -> str:
        return self._name

    def get_namespace(self) -> str:
        return self._namespace

    def get_fully_qualified_name(self) -> str:
        return (self._namespace.rstrip("/") + "/" + self._name) if self._namespace != "/" else "/" + self._name

    def get_logger(self):
        return self._logger

    def get_clock(self) -> Clock:
        return self._clock

    @property
    def default_callback_group(self) -> CallbackGroup:
        return self._default_callback_group

    @property
    def callback_groups(self) -> list[CallbackGroup]:
        return list(self._callback_groups)

    @property
    def executor(self):
        return self._executor_ref() if self._executor_ref is not None else None

    @executor.setter
    def executor(self, new_executor) -> None:
        current = self.executor
        if current is new_executor:
            return
        if current is not None:
            current.remove_node(self)
        if new_executor is None:
            self._executor_ref = None
        else:
            new_executor.add_node(self)

    def _set_executor(self, executor) -> None:
        self._executor_ref = weakref.ref(executor) if executor is not None else None

    def _wake(self) -> None:
        ex = self.executor
        if ex is not None:
            ex.wake()

    def _changed(self) -> None:
        self._generation += 1
        self._wake()

    @property
    def publishers(self):
        return list(self._publishers)

    @property
    def subscriptions(self):
        return list(self._subscriptions)

    @property
    def timers(self):
        return list(self._timers)

    @property
    def services(self):
        return list(self._services)

    @property
    def clients(self):
        return list(self._clients)

    @property
    def guards(self):
        return list(self._guards)

    def resolve_topic_name(self, topic: str, *, only_expand: bool = False) -> str:
        expanded = expand_name(topic, self._name, self._namespace)
        return expanded if only_expand else remap_name(expanded, self._name, self._namespace, self._args.remaps)

    resolve_service_name = resolve_topic_name

    def _group(self, group: Optional[CallbackGroup]) -> CallbackGroup:
        if group is None:
            return self._default_callback_group
        if group not in self._callback_groups:
            self._callback_groups.append(group)
        return group

    # --- endpoints -----------------------------------------------------------------------------------
    def create_publisher(self, msg_type, topic: str, qos_profile: Union[QoSProfile, int], *, callback_group=None,
                         event_callbacks=None, qos_overriding_options=None, publisher_class=None) -> Publisher:
        pub = Publisher(self, msg_type, self.resolve_topic_name(topic), qos_from(qos_profile), self._group(callback_group))
        with self._lock:
            self._publishers.append(pub)
        self._context.graph.add_endpoint(id(self), pub.guid, is_reader=False)
        return pub

    def create_subscription(self, msg_type, topic: str, callback: Callable, qos_profile: Union[QoSProfile, int], *,
                            callback_group=None, event_callbacks=None, qos_overriding_options=None,
                            raw: bool = False) -> Subscription:
        group = self._group(callback_group)
        sub = Subscription(self, msg_type, self.resolve_topic_name(topic), callback, qos_from(qos_profile), group, raw)
        group.add_entity(sub)
        with self._lock:
            self._subscriptions.append(sub)
        self._context.graph.add_endpoint(id(self), sub.guid, is_reader=True)
        self._changed()
        return sub

    def create_timer(self, timer_period_sec: float, callback: Optional[Callable], callback_group=None,
                     clock: Optional[Clock] = None, autostart: bool = True) -> Timer:
        group = self._group(callback_group)
        timer = Timer(callback, group, int(round(timer_period_sec * 1e9)), clock or self._clock,
                      context=self._context, autostart=autostart)
        group.add_entity(timer)
        with self._lock:
            self._timers.append(timer)
        self._changed()
        return timer

    def create_rate(self, frequency: float, clock: Optional[Clock] = None) -> Rate:
        if frequency <= 0:
            raise ValueError("frequency must be > 0")
        return Rate(int(round(1e9 / frequency)), clock or self._clock, self._context)

    def create_guard_condition(self, callback: Callable, callback_group=None) -> GuardCondition:
        group = self._group(callback_group)
        gc = GuardCondition(callback, group, self)
        group.add_entity(gc)
        with self._lock:
            self._guards.append(gc)
        self._changed()
        return gc

    def create_service(self, srv_type, srv_name: str, callback: Callable, *,
                       qos_profile: QoSProfile = qos_profile_services_default, callback_group=None) -> Service:
        group = self._group(callback_group)
        srv = Service(self, srv_type, self.resolve_service_name(srv_name), callback, qos_profile, group)
        group.add_entity(srv)
        with self._lock:
            self._services.append(srv)
        rd, wr = srv.endpoint_guids
        self._context.graph.add_endpoint(id(self), rd, is_reader=True)
        self._context.graph.add_endpoint(id(self), wr, is_reader=False)
        self._changed()
        return srv

    def create_client(self, srv_type, srv_name: str, *, qos_profile: QoSProfile = qos_profile_services_default,
                      callback_group=None) -> Client:
        group = self._group(callback_group)
        cli = Client(self, srv_type, self.resolve_service_name(srv_name), qos_profile, group)
        group.add_entity(cli)
        with self._lock:
            self._clients.append(cli)
        rd, wr = cli.endpoint_guids
        self._context.graph.add_endpoint(id(self), rd, is_reader=True)
        self._context.graph.add_endpoint(id(self), wr, is_reader=False)
        self._changed()
        return cli

    def _remove(self, lst: list, entity) -> bool:
        with self._lock:
            if entity in lst:
                lst.remove(entity)
                return True
        return False

    def destroy_publisher(self, publisher: Publisher) -> bool:
        if self._remove(self._publishers, publisher):
            self._context.graph.remove_endpoint(id(self), publisher.guid, is_reader=False)
            publisher.destroy()
            return True
        return False

    def destroy_subscription(self, subscription: Subscription) -> bool:
        if self._remove(self._subscriptions, subscription):
            self._changed()
            self._context.graph.remove_endpoint(id(self), subscription.guid, is_reader=True)
            subscription.destroy()
            return True
        return False

    def destroy_timer(self, timer: Timer) -> bool:
        if self._remove(self._timers, timer):
            timer.destroy()
            self._changed()
            return True
        return False

    def destroy_guard_condition(self, guard: GuardCondition) -> bool:
        if self._remove(self._guards, guard):
            guard.destroy()
            self._changed()
            return True
        return False

    def destroy_service(self, service: Service) -> bool:
        if self._remove(self._services, service):
            self._changed()
            rd, wr = service.endpoint_guids
            self._context.graph.remove_endpoint(id(self), rd, is_reader=True)
            self._context.graph.remove_endpoint(id(self), wr, is_reader=False)
            service.destroy()
            return True
        return False

    def destroy_client(self, client: Client) -> bool:
        if self._remove(self._clients, client):
            self._changed()
            rd, wr = client.endpoint_guids
            self._context.graph.remove_endpoint(id(self), rd, is_reader=True)
            self._context.graph.remove_endpoint(id(self), wr, is_reader=False)
            client.destroy()
            return True
        return False

    def destroy_rate(self, rate: Rate) -> bool:
        return True

    def destroy_node(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        if self._rosout_sink is not None:
            rcutils_logger.remove_sink(self._rosout_sink)
        ex = self.executor
        if ex is not None:
            ex.remove_node(self)
        for lst in (self._subscriptions, self._services, self._clients, self._publishers):
            for e in list(lst):
                try:
                    e.destroy()
                except Exception:  # participant may already be gone at shutdown
                    pass
            lst.clear()
        for t in self._timers:
            t.destroy()
        self._timers.clear()
        self._guards.clear()
        try:
            if self._context._graph is not None:
                self._context.graph.remove_node(id(self))
        except Exception:
            pass

    # --- graph queries (from DDS discovery) ------------------------------------------------------------
    def _monitor(self):
        from gemma3nvla_ros.runtime.discovery import monitor_for
        return monitor_for(self._context.participant())

    def count_publishers(self, topic_name: str) -> int:
        mon = self._monitor()
        return mon.count("rt" + self.resolve_topic_name(topic_name), readers=False) if mon else 0

    def count_subscribers(self, topic_name: str) -> int:
        mon = self._monitor()
        return mon.count("rt" + self.resolve_topic_name(topic_name), readers=True) if mon else 0

    def get_topic_names_and_types(self, no_demangle: bool = False) -> list[tuple[str, list[str]]]:
        mon = self._monitor()
        return mon.topic_names_and_types() if mon else []

    def get_node_names_and_namespaces(self) -> list[tuple[str, str]]:
        """(name, namespace) of every node in the graph, this process' included (from every
        participant's ros_discovery_info, as rmw does)."""
        from gemma3nvla_ros.runtime.graph import node_graph_for
        graph = node_graph_for(self._context.participant(), self._context.distro)
        return [(name, ns) for ns, name, _readers, _writers in graph.nodes()]

    def get_node_names(self) -> list[str]:
        return [name for name, _ns in self.get_node_names_and_namespaces()]

    # --- parameters ----------------------------------------------------------------------------------
    def declare_parameter(self, name: str, value: Any = None, descriptor=None,
                          ignore_override: bool = False) -> Parameter:
        if value is None and descriptor is None:
            return self.declare_parameters("", [(name,)], ignore_override)[0]  # rclpy: dynamically typed
        return self.declare_parameters("", [(name, value, descriptor or _rcl().msg.ParameterDescriptor())],
                                       ignore_override)[0]

    def declare_parameters(self, namespace: str, parameters: list, ignore_override: bool = False) -> list[Parameter]:
        rcl = _rcl()
        to_set: list[Parameter] = []
        descriptors: dict[str, Any] = {}
        for entry in parameters:
            if not isinstance(entry, tuple) or not 1 <= len(entry) <= 3:
                raise TypeError("parameters must be tuples of (name[, value[, descriptor]])")
            name = entry[0]
            if not isinstance(name, str) or not name:
                raise TypeError("parameter name must be a non-empty string")
            full = f"{namespace}.{name}" if namespace else name
            value = entry[1] if len(entry) > 1 else None
            descriptor = entry[2] if len(entry) > 2 else rcl.msg.ParameterDescriptor()
            if len(entry) == 1:  # rclpy (deprecated form): a name alone declares a dynamically typed parameter
                descriptor.dynamic_typing = True
            descriptor.name = full
            if full in self._parameters or full in descriptors:
                raise ParameterAlreadyDeclaredException(full)
            if isinstance(value, Parameter.Type):
                descriptor.type = value.value
                value = None
            elif not descriptor.dynamic_typing and value is not None:
                descriptor.type = Parameter.Type.from_parameter_value(value).value
            if not ignore_override and full in self._parameter_overrides:
                value = self._parameter_overrides[full].value
            descriptors[full] = descriptor
            to_set.append(Parameter(full, value=value))
        with self._param_lock:
            # type/range checks and user callbacks run exactly as for set_parameters (rclpy)
            result = self._set_parameters_atomically_impl(to_set, descriptors, declaring=True)
            if not result.successful:
                if result.reason.startswith("Wrong parameter type"):
                    p = to_set[0]
                    for cand in to_set:
                        d = descriptors[cand.name]
                        if not d.dynamic_typing and d.type != cand.type_.value and cand.value is not None:
                            p = cand
                    raise InvalidParameterTypeException(p, Parameter.Type(descriptors[p.name].type).name)
                raise InvalidParameterValueException(to_set[0].name, to_set[0].value, result.reason)
        return [self._parameters[p.name] for p in to_set]

    def undeclare_parameter(self, name: str) -> None:
        with self._param_lock:
            if name not in self._parameters:
                raise ParameterNotDeclaredException(name)
            if self._descriptors[name].read_only:
                raise ParameterImmutableException(name)
            del self._parameters[name]
            del self._descriptors[name]

    def has_parameter(self, name: str) -> bool:
        return name in self._parameters

    def get_parameter(self, name: str) -> Parameter:
        p = self._parameters.get(name)
        if p is not None:
            return p
        if self._allow_undeclared:
            return Parameter(name, Parameter.Type.NOT_SET, None)
        raise ParameterNotDeclaredException(name)

    def get_parameter_or(self, name: str, alternative_value: Optional[Parameter] = None) -> Parameter:
        if alternative_value is None:
            alternative_value = Parameter(name, Parameter.Type.NOT_SET)
        return self._parameters.get(name, alternative_value)

    def get_parameters(self, names: Iterable[str]) -> list[Parameter]:
        return [self.get_parameter(n) for n in names]

    def get_parameters_by_prefix(self, prefix: str) -> dict[str, Parameter]:
        pre = prefix + "." if prefix else ""
        return {n[len(pre):]: p for n, p in self._parameters.items() if n.startswith(pre)}

    def get_parameter_types(self, names: Iterable[str]) -> list[Parameter.Type]:
        return [self._parameters[n].type_ if n in self._parameters else Parameter.Type.NOT_SET for n in names]

    def describe_parameter(self, name: str):
        if name in self._descriptors:
            return self._descriptors[name]
        if self._allow_undeclared:
            return _rcl().msg.ParameterDescriptor(name=name)
        raise ParameterNotDeclaredException(name)

    def describe_parameters(self, names: Iterable[str]) -> list:
        return [self.describe_parameter(n) for n in names]

    def set_descriptor(self, name: str, descriptor, alternative_value=None):
        if name not in self._parameters:
            raise ParameterNotDeclaredException(name)
        descriptor.name = name
        self._descriptors[name] = descriptor
        return self.get_parameter(name).get_parameter_value()

    def add_on_set_parameters_callback(self, callback: Callable) -> Callable:
        self._on_set_callbacks.insert(0, callback)  # rclpy: newest first
        return callback

    def remove_on_set_parameters_callback(self, callback: Callable) -> None:
        self._on_set_callbacks.remove(callback)

    def add_pre_set_parameters_callback(self, callback: Callable) -> Callable:
        self._pre_set_callbacks.insert(0, callback)
        return callback

    def remove_pre_set_parameters_callback(self, callback: Callable) -> None:
        self._pre_set_callbacks.remove(callback)

    def add_post_set_parameters_callback(self, callback: Callable) -> Callable:
        self._post_set_callbacks.insert(0, callback)
        return callback

    def remove_post_set_parameters_callback(self, callback: Callable) -> None:
        self._post_set_callbacks.remove(callback)

    def set_parameters(self, parameter_list: list[Parameter]) -> list:
        results = []
        for p in parameter_list:
            if not isinstance(p, Parameter):
                raise TypeError("parameters must be rclpy Parameter objects")
            if p.name not in self._parameters and not self._allow_undeclared:
                raise ParameterNotDeclaredException(p.name)
        for p in parameter_list:
            results.append(self.set_parameters_atomically([p]))
        return results

    def set_parameters_atomically(self, parameter_list: list[Parameter]):
        for p in parameter_list:
            if p.name not in self._parameters and not self._allow_undeclared:
                raise ParameterNotDeclaredException(p.name)
        with self._param_lock:
            return self._set_parameters_atomically_impl(list(parameter_list), {}, declaring=False)

    def _check_against_descriptor(self, p: Parameter, d) -> Optional[str]:
        if d.read_only and not getattr(self, "_declaring", False):
            return f"Trying to set a read-only parameter: {p.name}."
        if not d.dynamic_typing and p.value is not None and Parameter.Type(d.type) != p.type_ \
                and Parameter.Type(d.type) != Parameter.Type.NOT_SET:
            return f"Wrong parameter type, expected '{Parameter.Type(d.type)}' got '{p.type_}'"
        if p.type_ == Parameter.Type.DOUBLE and len(d.floating_point_range):
            r = d.floating_point_range[0]
            if not _in_float_range(p.value, r, self.PARAM_REL_TOL):
                return (f"Parameter {p.name} out of range. Min: {r.from_value}, Max: {r.to_value}, "
                        f"step: {r.step}")
        if p.type_ == Parameter.Type.INTEGER and len(d.integer_range):
            r = d.integer_range[0]
            if not _in_int_range(p.value, r):
                return f"Parameter {p.name} out of range. Min: {r.from_value}, Max: {r.to_value}, step: {r.step}"
        return None

    def _set_parameters_atomically_impl(self, params: list[Parameter], new_descriptors: dict, declaring: bool):
        rcl = _rcl()
        for cb in self._pre_set_callbacks:
            params = list(cb(params))
            if not params:
                return rcl.msg.SetParametersResult(successful=False, reason="parameter list cannot be empty, this might be due to pre_set_parameters_callback modifying the original parameters list.")
        self._declaring = declaring
        try:
            for p in params:
                d = new_descriptors.get(p.name) or self._descriptors.get(p.name)
                if d is None:
                    if not self._allow_undeclared:
                        return rcl.msg.SetParametersResult(successful=False, reason=f"Parameter {p.name} not declared")
                    d = rcl.msg.ParameterDescriptor(name=p.name, dynamic_typing=True)
                    new_descriptors[p.name] = d
                if p.type_ == Parameter.Type.NOT_SET and not declaring:
                    if not d.dynamic_typing:
                        return rcl.msg.SetParametersResult(
                            successful=False, reason="Static parameter cannot be undeclared")
                reason = self._check_against_descriptor(p, d)
                if reason:
                    return rcl.msg.SetParametersResult(successful=False, reason=reason)
        finally:
            self._declaring = False
        for cb in self._on_set_callbacks:
            result = cb(params)
            if result is None or not result.successful:
                return result if result is not None else rcl.msg.SetParametersResult(
                    successful=False, reason="on_set_parameters callback returned None")
        new, changed, deleted = [], [], []
        for p in params:
            if p.name in new_descriptors:
                self._descriptors[p.name] = new_descriptors[p.name]
            if p.type_ == Parameter.Type.NOT_SET and not declaring and p.name in self._parameters:
                del self._parameters[p.name]
                self._descriptors.pop(p.name, None)
                deleted.append(p)
                continue
            (new if p.name not in self._parameters else changed).append(p)
            self._parameters[p.name] = p
            if p.name == "use_sim_time":
                self._apply_use_sim_time(bool(p.value))
        for cb in self._post_set_callbacks:
            try:
                cb(params)
            except Exception as exc:
                self._logger.error(f"post_set_parameters callback failed: {exc!r}")
        self._publish_parameter_event(new, changed, deleted)
        return rcl.msg.SetParametersResult(successful=True, reason="")

    def _publish_parameter_event(self, new, changed, deleted) -> None:
        if self._param_events_pub is None:
            return
        try:
            rcl = _rcl()
            ev = rcl.msg.ParameterEvent(
                stamp=self._clock.now().to_msg(), node=self.get_fully_qualified_name(),
                new_parameters=[p.to_parameter_msg() for p in new],
                changed_parameters=[p.to_parameter_msg() for p in changed],
                deleted_parameters=[p.to_parameter_msg() for p in deleted])
            self._param_events_pub.publish(ev)
        except Exception as exc:  # events are informational; never break a parameter change
            self._logger.debug(f"parameter event not published: {exc!r}")

    # --- /rosout ------------------------------------------------------------------------------------------
    def _start_rosout(self) -> None:
        """Publish this node's log lines on /rosout (rcl_interfaces/msg/Log) as rcl does, so
        ``ros2 topic echo /rosout`` and rqt_console see them."""
        from gemma3nvla_ros.runtime.qos import DurabilityPolicy, HistoryPolicy
        try:
            rcl = _rcl()
            pub = self.create_publisher(rcl.msg.Log, "/rosout", QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.TRANSIENT_LOCAL, lifespan=Duration(seconds=10)))
        except Exception as exc:  # optional; never fatal
            self._logger.debug(f"no /rosout publisher: {exc!r}")
            return
        own = self._logger.name

        def sink(severity, name, message, frame, t_ns):
            if name != own and not name.startswith(own + "."):
                return
            msg = rcl.msg.Log(level=int(severity), name=name, msg=message, file=frame.f_code.co_filename,
                              function=frame.f_code.co_name, line=frame.f_lineno)
            msg.stamp.sec, msg.stamp.nanosec = divmod(t_ns, 1_000_000_000)
            pub.publish(msg)

        self._rosout_sink = sink
        rcutils_logger.add_sink(sink)

    # --- sim time ------------------------------------------------------------------------------------
    def _apply_use_sim_time(self, enabled: bool) -> None:
        if enabled and self._clock_sub is None:
            from gemma3nvla_ros.runtime.interfaces import rosgraph_msgs
            from gemma3nvla_ros.runtime.qos import HistoryPolicy
            self._clock._set_ros_time_active(True)
            self._clock_sub = self.create_subscription(
                rosgraph_msgs.msg.Clock, "/clock", self._on_clock,
                QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        elif not enabled and self._clock_sub is not None:
            sub, self._clock_sub = self._clock_sub, None
            self.destroy_subscription(sub)
            self._clock._set_ros_time_active(False)

    def _on_clock(self, msg) -> None:
        self._clock._set_ros_time(msg.clock.sec * 1_000_000_000 + msg.clock.nanosec)

    def __repr__(self) -> str:
        return f"<Node {self.get_fully_qualified_name()}>"


def _in_float_range(value: float, r, tol: float) -> bool:
    lo, hi, step = r.from_value, r.to_value, r.step
    if math.isclose(value, lo, rel_tol=tol) or math.isclose(value, hi, rel_tol=tol):
        return True
    if value < lo or value > hi:
        return False
    if step == 0.0:
        return True
    q = (value - lo) / step
    return math.isclose(q, round(q), rel_tol=tol)


def _in_int_range(value: int, r) -> bool:
    lo, hi, step = r.from_value, r.to_value, r.step
    if value in (lo, hi):
        return True
    if value < lo or value > hi:
        return False
    return step == 0 or (value - lo) % step == 0

