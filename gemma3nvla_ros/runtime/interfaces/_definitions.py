"""The ROS 2 interface definitions the runtime knows, as .msg/.srv text (comments stripped).

Humble and Jazzy agree on every definition here except ``rmw_dds_common/msg/Gid`` (see
``GID_BYTES``) and the constant type of ``rcl_interfaces/msg/Log`` (``byte`` on Humble, ``uint8``
on Jazzy; the wire format is the same, so the Jazzy text is used). Nested names are written
``pkg/Name`` as ROS 2 requires, or bare for a type of the same package.
"""
from __future__ import annotations

MESSAGES: dict[str, str] = {
    "builtin_interfaces/msg/Time": """
        int32 sec
        uint32 nanosec
    """,
    "builtin_interfaces/msg/Duration": """
        int32 sec
        uint32 nanosec
    """,
    "std_msgs/msg/Header": """
        builtin_interfaces/Time stamp
        string frame_id
    """,
    "std_msgs/msg/String": "string data",
    "std_msgs/msg/Bool": "bool data",
    "std_msgs/msg/Float32": "float32 data",
    "std_msgs/msg/Float64": "float64 data",
    "std_msgs/msg/Int32": "int32 data",
    "std_msgs/msg/Empty": "",
    "std_msgs/msg/MultiArrayDimension": """
        string label
        uint32 size
        uint32 stride
    """,
    "std_msgs/msg/MultiArrayLayout": """
        MultiArrayDimension[] dim
        uint32 data_offset
    """,
    "std_msgs/msg/Float64MultiArray": """
        MultiArrayLayout layout
        float64[] data
    """,
    "sensor_msgs/msg/Image": """
        std_msgs/Header header
        uint32 height
        uint32 width
        string encoding
        uint8 is_bigendian
        uint32 step
        uint8[] data
    """,
    "sensor_msgs/msg/CompressedImage": """
        std_msgs/Header header
        string format
        uint8[] data
    """,
    "sensor_msgs/msg/RegionOfInterest": """
        uint32 x_offset
        uint32 y_offset
        uint32 height
        uint32 width
        bool do_rectify
    """,
    "sensor_msgs/msg/CameraInfo": """
        std_msgs/Header header
        uint32 height
        uint32 width
        string distortion_model
        float64[] d
        float64[9] k
        float64[9] r
        float64[12] p
        uint32 binning_x
        uint32 binning_y
        RegionOfInterest roi
    """,
    "sensor_msgs/msg/JointState": """
        std_msgs/Header header
        string[] name
        float64[] position
        float64[] velocity
        float64[] effort
    """,
    "trajectory_msgs/msg/JointTrajectoryPoint": """
        float64[] positions
        float64[] velocities
        float64[] accelerations
        float64[] effort
        builtin_interfaces/Duration time_from_start
    """,
    "trajectory_msgs/msg/JointTrajectory": """
        std_msgs/Header header
        string[] joint_names
        JointTrajectoryPoint[] points
    """,
    "rcl_interfaces/msg/ParameterType": """
        uint8 PARAMETER_NOT_SET=0
        uint8 PARAMETER_BOOL=1
        uint8 PARAMETER_INTEGER=2
        uint8 PARAMETER_DOUBLE=3
        uint8 PARAMETER_STRING=4
        uint8 PARAMETER_BYTE_ARRAY=5
        uint8 PARAMETER_BOOL_ARRAY=6
        uint8 PARAMETER_INTEGER_ARRAY=7
        uint8 PARAMETER_DOUBLE_ARRAY=8
        uint8 PARAMETER_STRING_ARRAY=9
    """,
    "rcl_interfaces/msg/ParameterValue": """
        uint8 type
        bool bool_value
        int64 integer_value
        float64 double_value
        string string_value
        byte[] byte_array_value
        bool[] bool_array_value
        int64[] integer_array_value
        float64[] double_array_value
        string[] string_array_value
    """,
    "rcl_interfaces/msg/Parameter": """
        string name
        ParameterValue value
    """,
    "rcl_interfaces/msg/IntegerRange": """
        int64 from_value
        int64 to_value
        uint64 step
    """,
    "rcl_interfaces/msg/FloatingPointRange": """
        float64 from_value
        float64 to_value
        float64 step
    """,
    "rcl_interfaces/msg/ParameterDescriptor": """
        string name
        uint8 type
        string description
        string additional_constraints
        bool read_only
        bool dynamic_typing
        FloatingPointRange[<=1] floating_point_range
        IntegerRange[<=1] integer_range
    """,
    "rcl_interfaces/msg/SetParametersResult": """
        bool successful
        string reason
    """,
    "rcl_interfaces/msg/ListParametersResult": """
        string[] names
        string[] prefixes
    """,
    "rcl_interfaces/msg/ParameterEvent": """
        builtin_interfaces/Time stamp
        string node
        Parameter[] new_parameters
        Parameter[] changed_parameters
        Parameter[] deleted_parameters
    """,
    "rcl_interfaces/msg/Log": """
        uint8 DEBUG=10
        uint8 INFO=20
        uint8 WARN=30
        uint8 ERROR=40
        uint8 FATAL=50
        builtin_interfaces/Time stamp
        uint8 level
        string name
        string msg
        string file
        string function
        uint32 line
    """,
    "rosgraph_msgs/msg/Clock": "builtin_interfaces/Time clock",
    "diagnostic_msgs/msg/KeyValue": """
        string key
        string value
    """,
    "diagnostic_msgs/msg/DiagnosticStatus": """
        byte OK=0
        byte WARN=1
        byte ERROR=2
        byte STALE=3
        byte level
        string name
        string message
        string hardware_id
        KeyValue[] values
    """,
    "diagnostic_msgs/msg/DiagnosticArray": """
        std_msgs/Header header
        DiagnosticStatus[] status
    """,
    "rmw_dds_common/msg/Gid": "char[16] data",
    "rmw_dds_common/msg/NodeEntitiesInfo": """
        string<=256 node_namespace
        string<=256 node_name
        Gid[] reader_gid_seq
        Gid[] writer_gid_seq
    """,
    "rmw_dds_common/msg/ParticipantEntitiesInfo": """
        Gid gid
        NodeEntitiesInfo[] node_entities_info_seq
    """,
    # Iron and later: the info block of every service's introspection Event message.
    "service_msgs/msg/ServiceEventInfo": """
        uint8 REQUEST_SENT=0
        uint8 REQUEST_RECEIVED=1
        uint8 RESPONSE_SENT=2
        uint8 RESPONSE_RECEIVED=3
        uint8 event_type
        builtin_interfaces/Time stamp
        char[16] client_gid
        int64 sequence_number
    """,
}

# (request, response) text of each service. Iron and later also generate <Name>_Event (EVENT_TEXT).
SERVICES: dict[str, tuple[str, str]] = {
    "std_srvs/srv/Empty": ("", ""),
    "std_srvs/srv/Trigger": ("", "bool success\nstring message"),
    "std_srvs/srv/SetBool": ("bool data", "bool success\nstring message"),
    "rcl_interfaces/srv/GetParameters": ("string[] names", "ParameterValue[] values"),
    "rcl_interfaces/srv/SetParameters": ("Parameter[] parameters", "SetParametersResult[] results"),
    "rcl_interfaces/srv/SetParametersAtomically": (
        "Parameter[] parameters",
        "SetParametersResult result",
    ),
    "rcl_interfaces/srv/ListParameters": (
        "uint64 DEPTH_RECURSIVE=0\nstring[] prefixes\nuint64 depth",
        "ListParametersResult result",
    ),
    "rcl_interfaces/srv/DescribeParameters": ("string[] names", "ParameterDescriptor[] descriptors"),
    "rcl_interfaces/srv/GetParameterTypes": ("string[] names", "uint8[] types"),
}

EVENT_TEXT = """
    service_msgs/ServiceEventInfo info
    {srv}_Request[<=1] request
    {srv}_Response[<=1] response
"""

# rmw_dds_common's Gid grew from RMW_GID_STORAGE_SIZE 24 (Humble) to 16 bytes (Iron and later).
GID_BYTES = {"humble": 24}
GID_BYTES_DEFAULT = 16
